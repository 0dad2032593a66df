package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"alorules/store"
)

// cmdBackup saves a consistent copy of a running service's store, checks
// that it opens, and only then puts it in place.
func cmdBackup(ctx context.Context, args []string, cio cmdIO) int {
	f := newEnvFlags("backup", cio.getenv)
	f.fs.SetOutput(cio.stderr)
	server := f.String("server", "http://127.0.0.1:8081", "admin URL of the running service")
	f.fs.Usage = func() {
		fmt.Fprintln(cio.stderr, "usage: alorules backup --server URL FILE")
		f.fs.PrintDefaults()
	}
	if err := f.Parse(args); err != nil {
		return 2
	}
	if f.fs.NArg() != 1 {
		f.fs.Usage()
		return 2
	}
	dst := f.fs.Arg(0)
	n, err := backup(ctx, *server, dst, cio.getenv)
	if err != nil {
		return cio.errorf("backup: %v", err)
	}
	fmt.Fprintf(cio.stdout, "%s: %d bytes, checked\n", dst, n)
	return 0
}

func backup(ctx context.Context, server, dst string, getenv func(string) string) (int64, error) {
	c := &adminClient{base: server, getenv: getenv, http: &http.Client{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(server, "/")+"/api/v1/backup", nil)
	if err != nil {
		return 0, err
	}
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".alorules-backup-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, resp.Body)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, err
	}
	// A copy that does not open and pass bbolt's check is no backup.
	st, err := store.Open(tmp.Name(), store.Options{Timeout: 5 * time.Second})
	if err != nil {
		return n, fmt.Errorf("downloaded copy does not open: %w", err)
	}
	err = st.Check()
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("downloaded copy is damaged: %w", err)
	}
	return n, os.Rename(tmp.Name(), dst)
}

// cmdCompact rewrites a stopped store into a new file.
func cmdCompact(args []string, cio cmdIO) int {
	if len(args) != 2 {
		fmt.Fprintln(cio.stderr, "usage: alorules compact SRC DST   (the service must be stopped)")
		return 2
	}
	src, dst := args[0], args[1]
	before, err := os.Stat(src)
	if err != nil {
		return cio.errorf("compact: %v", err)
	}
	if err := store.Compact(src, dst, store.Options{}); err != nil {
		return cio.errorf("%v", err)
	}
	after, err := os.Stat(dst)
	if err != nil {
		return cio.errorf("compact: %v", err)
	}
	fmt.Fprintf(cio.stdout, "%s: %d bytes -> %s: %d bytes\n", src, before.Size(), dst, after.Size())
	return 0
}
