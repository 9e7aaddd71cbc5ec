//go:build unix

package hsm

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive advisory lock on path+".lock", so that two
// processes (a running sidecar and `sidecrypt kek rotate`) cannot both
// read the key file, add a version, and write it back: the second write
// would drop the first's KEK, and every data key wrapped under it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, softFileMode)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
