package store

import (
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Compact rewrites the store at src into a new file at dst, leaving out the
// free pages that deleted events left behind. src must not be in use: the
// service holds its lock, and Compact waits for it no longer than timeout.
func Compact(src, dst string, opt Options) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("compact: %s exists; choose a new file", dst)
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	from, err := bolt.Open(src, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: true})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return fmt.Errorf("compact %s: %w (stop the service first)", src, ErrLocked)
		}
		return fmt.Errorf("compact: open %s: %w", src, err)
	}
	defer from.Close()
	to, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		return fmt.Errorf("compact: create %s: %w", dst, err)
	}
	// 64 MiB per transaction keeps memory flat on large stores.
	if err := bolt.Compact(to, from, 64<<20); err != nil {
		to.Close()
		os.Remove(dst)
		return fmt.Errorf("compact %s: %w", src, err)
	}
	return to.Close()
}
