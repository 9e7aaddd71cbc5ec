package loadtest

import (
	"context"
	"syscall"
	"time"
)

// sleepUntil blocks until t with nanosleep(2), in slices of at most 20ms
// so that cancellation is noticed; it reports false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	for {
		if ctx.Err() != nil {
			return false
		}
		w := time.Until(t)
		if w <= 0 {
			return true
		}
		ts := syscall.NsecToTimespec(int64(min(w, 20*time.Millisecond)))
		_ = syscall.Nanosleep(&ts, nil) // EINTR: the loop sleeps again
	}
}
