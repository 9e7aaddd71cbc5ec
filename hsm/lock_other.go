//go:build !unix

package hsm

// lockFile is a no-op where flock(2) does not exist. The software provider
// is for development; on such systems, do not rotate its KEK from two
// processes at once.
func lockFile(path string) (unlock func(), err error) { return func() {}, nil }
