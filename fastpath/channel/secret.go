package channel

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
)

// MinSecretLen is the shortest per-host secret accepted (128 bits).
const MinSecretLen = 16

// WeakSecretFileError reports a secret file others can read.
type WeakSecretFileError struct {
	Path string
	Mode os.FileMode
}

func (e *WeakSecretFileError) Error() string {
	return fmt.Sprintf("secret file %s has mode %v: group and others must have no access (chmod 600)", e.Path, e.Mode.Perm())
}

// ReadSecretFile reads the per-host binding secret. Surrounding whitespace is
// ignored so `echo secret > file` works; the file must be private to its owner.
func ReadSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("binding secret: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, &WeakSecretFileError{Path: path, Mode: fi.Mode()}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("binding secret: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < MinSecretLen {
		return nil, fmt.Errorf("binding secret %s: %d bytes, need at least %d", path, len(b), MinSecretLen)
	}
	return b, nil
}

// WriteNewSecretFile writes a fresh random secret (64 hex digits) to path with
// mode 0600, as host preparation does.
func WriteNewSecretFile(path string) error {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("generate secret: %w", err)
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(raw[:])+"\n"), 0o600); err != nil {
		return fmt.Errorf("write secret %s: %w", path, err)
	}
	return nil
}
