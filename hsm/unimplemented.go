package hsm

// TEMPORARY placeholder, deleted by the implementation.

import (
	"context"
	"errors"
)

func open(ctx context.Context, spec string, opts Options) (Provider, error) {
	return nil, errors.New("hsm: not implemented yet")
}
