package loadtest

import "syscall"

// childProcAttr puts a child in its own process group and, through
// Pdeathsig, stops it if the load test itself is killed without a chance
// to clean up.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
