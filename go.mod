module github.com/sidecrypt/sidecrypt

go 1.26.0

require (
	github.com/caarlos0/env/v11 v11.4.2
	github.com/tink-crypto/tink-go/v2 v2.9.0
)

require (
	github.com/rogpeppe/go-internal v1.16.0 // indirect
	golang.org/x/sys v0.46.0 // indirect
	golang.org/x/tools v0.26.0 // indirect
)
