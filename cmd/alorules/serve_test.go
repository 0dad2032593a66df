package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reloadsFailed reads alorules_rules_reloads_total{result="failure"}.
func reloadsFailed(t testing.TB, admin string) string {
	for _, line := range strings.Split(metricsText(t, admin, nil), "\n") {
		if v, ok := strings.CutPrefix(line, `alorules_rules_reloads_total{result="failure"} `); ok {
			return v
		}
	}
	return ""
}

// TestSIGHUPFailureLoggedOnce: SIGHUPs sent for the same broken rules file
// are each counted, and the failure is logged once, by the engine.
func TestSIGHUPFailureLoggedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service as a subprocess")
	}
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("version: 1\nrules:\n  - name: a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, dir, "")
	if err := os.WriteFile(rules, []byte("version: 1\nrules:\n  - name: a\n    iff: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The watcher sees the edit first: one failure, logged.
	waitFor(t, 10*time.Second, "the edit's failed reload", func() bool { return reloadsFailed(t, c.admin) == "1" })
	for want := 2; want <= 3; want++ {
		if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "a failed reload counted after SIGHUP", func() bool {
			return reloadsFailed(t, c.admin) == strconv.Itoa(want)
		})
	}
	if code := c.term(20 * time.Second); code != 0 {
		t.Errorf("got exit code %d, want 0", code)
	}
	var errs []string
	sc := bufio.NewScanner(bytes.NewReader(readAll(t, c.log)))
	for sc.Scan() {
		var line struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Level == "ERROR" {
			errs = append(errs, line.Msg)
		}
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "reload failed") {
		t.Errorf("got error lines %q, want one: the engine's reload failure", errs)
	}
}

// TestReadyz: ready means rules loaded and a store that answers; a closed
// store makes it 503 with the reason. Only the listeners run: a runner
// starting on a store the test closes would fail on its own.
func TestReadyz(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("version: 1\nrules:\n  - name: a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := serveConfig{Rules: rules, DB: filepath.Join(dir, "alorules.db"), Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		SigningSecrets: []string{e2eSecret}, Tolerance: time.Minute, MaxBody: 1 << 20, Workers: 1, LockTimeout: time.Second}
	app, err := NewApp(cfg, slog.New(slog.DiscardHandler), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer app.store.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- app.web.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	_, admin := app.web.Addrs()
	get := func() (int, string) { return readyz(t, admin) }
	if code, body := get(); code != http.StatusOK || body != "ready\n" {
		t.Errorf("got %d %q, want 200 ready", code, body)
	}
	if err := app.store.Close(); err != nil {
		t.Fatal(err)
	}
	if code, body := get(); code != http.StatusServiceUnavailable || body != "not ready: store closed\n" {
		t.Errorf("with the store closed: got %d %q, want 503 not ready: store closed", code, body)
	}
}

// TestServeMaxPerTarget: --max-per-target and ALORULES_MAX_PER_TARGET set
// the cap per target, the flag winning; 0 (the default) leaves it to the
// runner (half of --workers); a negative value is refused.
func TestServeMaxPerTarget(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     string
		want    int
		wantErr string
	}{
		{"default", nil, "", 0, ""},
		{"flag", []string{"--max-per-target", "3"}, "", 3, ""},
		{"environment", nil, "5", 5, ""},
		{"flag wins", []string{"--max-per-target", "2"}, "5", 2, ""},
		{"negative", []string{"--max-per-target", "-1"}, "", 0, "--max-per-target -1"},
		{"not a number", nil, "many", 0, "ALORULES_MAX_PER_TARGET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				switch k {
				case "ALO_SIGNING_SECRET":
					return "s"
				case "ALORULES_MAX_PER_TARGET":
					return tt.env
				}
				return ""
			}
			cfg, err := parseServe(tt.args, cmdIO{stdout: io.Discard, stderr: io.Discard, getenv: getenv})
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got error %v, want one naming %s", err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("got error %v, want none", err)
			case cfg.MaxPerTarget != tt.want:
				t.Errorf("got %d, want %d", cfg.MaxPerTarget, tt.want)
			}
		})
	}
}
