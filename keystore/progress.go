package keystore

import "context"

type progressKey struct{}

// WithProgress returns a context under which Backup and ApplyRestore
// (and so Restore) report how far they are: fn(done, total) after each
// item (a version sealed into the backup, a key restored), and once with
// done 0 before the first. fn must be quick; it runs on the caller's
// goroutine.
func WithProgress(ctx context.Context, fn func(done, total int)) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

// progressOf returns the context's progress function, or one that does
// nothing.
func progressOf(ctx context.Context) func(done, total int) {
	if fn, ok := ctx.Value(progressKey{}).(func(done, total int)); ok && fn != nil {
		return fn
	}
	return func(int, int) {}
}
