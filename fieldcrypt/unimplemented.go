package fieldcrypt

// TEMPORARY: placeholders so that dependent packages compile while the
// implementation is written. This file is deleted by the implementation.

import (
	"context"
	"errors"
	"io"
)

var errUnimplemented = errors.New("fieldcrypt: not implemented yet")

type encryptor struct{}
type decryptor struct{}

func compileEncryptor(rules []FieldRule, lim Limits) (*encryptor, error) { return &encryptor{}, nil }
func newDecryptor(p Policy, lim Limits) *decryptor                     { return &decryptor{} }
func (e *encryptor) run(ctx context.Context, dst io.Writer, src io.Reader, keys Keyring, opt *CallOptions) (Report, error) {
	return Report{}, errUnimplemented
}
func (e *encryptor) runBytes(ctx context.Context, src []byte, keys Keyring, opt *CallOptions) ([]byte, Report, error) {
	return nil, Report{}, errUnimplemented
}
func (d *decryptor) run(ctx context.Context, dst io.Writer, src io.Reader, keys Keyring, opt *CallOptions) (Report, error) {
	return Report{}, errUnimplemented
}
func (d *decryptor) runBytes(ctx context.Context, src []byte, keys Keyring, opt *CallOptions) ([]byte, Report, error) {
	return nil, Report{}, errUnimplemented
}
func parseTokenInfo(token []byte) (TokenInfo, error) { return TokenInfo{}, errUnimplemented }
func appendSeal(dst []byte, k *DataKey, mode Mode, typ Type, jsonText []byte) ([]byte, error) {
	return nil, errUnimplemented
}
func sealString(k *DataKey, mode Mode, s string) ([]byte, error) { return nil, errUnimplemented }
func openToken(k *DataKey, token []byte) (Type, []byte, error)  { return 0, nil, errUnimplemented }
