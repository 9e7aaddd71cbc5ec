package keycache
