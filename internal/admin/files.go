package admin

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// tempFile is what writeFileAtomic needs of *os.File; a variable creates
// it so that tests can make a write come up short.
type tempFile interface {
	io.Writer
	Sync() error
	Close() error
	Chmod(os.FileMode) error
	Name() string
}

var createTemp = func(dir, pattern string) (tempFile, error) { return os.CreateTemp(dir, pattern) }

// writeFileAtomic replaces path with data so that a reader sees the old
// file or the new one, whole, never a part: a temporary file beside it,
// written, checked to hold exactly len(data) bytes (a short write, even
// one the writer did not report, is an error and nothing is replaced),
// fsynced, renamed over path, and the directory fsynced.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := createTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name)
	n, err := tmp.Write(data)
	if err == nil && n != len(data) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(data))
	}
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// What is on disk, not what Write said.
		var fi os.FileInfo
		if fi, err = os.Stat(name); err == nil && fi.Size() != int64(len(data)) {
			err = fmt.Errorf("short write: the file holds %d of %d bytes", fi.Size(), len(data))
		}
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// FileRulesWriter writes a rule file atomically (see writeFileAtomic),
// keeping its mode, so that the rule source never reads half a file or
// a file cut short by a full disk.
type FileRulesWriter string

// WriteRules implements RulesWriter.
func (path FileRulesWriter) WriteRules(_ context.Context, data []byte) error {
	p := string(path)
	mode := os.FileMode(0o644)
	if st, err := os.Stat(p); err == nil {
		mode = st.Mode().Perm()
	}
	if err := writeFileAtomic(p, data, mode); err != nil {
		return fmt.Errorf("admin: write rules %s: %w", p, err)
	}
	return nil
}
