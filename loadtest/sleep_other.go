//go:build !linux

package loadtest

import (
	"context"
	"time"
)

// sleepUntil blocks until t; it reports false if ctx ended first. Off
// Linux it uses a Go timer (open-loop timing is coarser there).
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
