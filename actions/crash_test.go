package actions

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"alorules"
	"alorules/store"
)

// The crash test re-executes the test binary as a runner process against a
// shared store file and kills it with SIGKILL while steps are in flight.
const (
	envCrashDB     = "ALORULES_CRASH_DB"
	envCrashTarget = "ALORULES_CRASH_TARGET"
	crashSteps     = 3
)

func crashRenderer(target string) *testRenderer {
	var steps []func(*alorules.Execution) (Request, error)
	for i := range crashSteps {
		steps = append(steps, fixed(Request{Kind: KindHTTP, Conn: httpConn(target),
			Spec: &HTTP{Connection: "t", Path: "/step/" + strconv.Itoa(i), JSON: map[string]any{"step": i}}}))
	}
	return &testRenderer{rules: map[string][]func(*alorules.Execution) (Request, error){"crash": steps}}
}

// TestCrashChild is the runner process of TestCrashRecovery; it does
// nothing unless started by it.
func TestCrashChild(t *testing.T) {
	path, target := os.Getenv(envCrashDB), os.Getenv(envCrashTarget)
	if path == "" {
		t.Skip("only runs as TestCrashRecovery's child process")
	}
	s, err := store.Open(path, store.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(RunnerConfig{Store: s, Renderer: crashRenderer(target)})
	// Runs until the parent kills the process.
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCrashRecovery proves at-least-once delivery across SIGKILL: every
// execution ends final, every step was accepted by the target at least
// once, and nothing is lost.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	const executions = 40
	var (
		mu        sync.Mutex
		delivered = map[string]int{} // idempotency key -> accepted deliveries
		total     int
	)
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		// Slow enough that kills land mid-step; one answer in eight asks
		// for a retry, so kills also land on retrying executions.
		time.Sleep(time.Duration(rand.IntN(8)) * time.Millisecond)
		if rand.IntN(8) == 0 {
			w.WriteHeader(503)
			return
		}
		mu.Lock()
		delivered[r.Header.Get("Idempotency-Key")]++
		total++
		mu.Unlock()
	})
	accepted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return total
	}

	path := filepath.Join(t.TempDir(), "crash.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	var exs []*alorules.Execution
	for i := range executions {
		kinds := make([]string, crashSteps)
		for j := range kinds {
			kinds[j] = KindHTTP
		}
		ex := newExecution("crash", fmt.Sprint("ev", i), kinds, nil, alorules.RetryPolicy{Attempts: 20, Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, time.Time{})
		exs = append(exs, ex)
	}
	addExecutions(t, s, exs...)
	for _, ex := range exs {
		ids = append(ids, ex.ID)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	kills := 0
	for round := range 4 {
		before := accepted()
		if before >= executions*crashSteps {
			break
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envCrashDB+"="+path, envCrashTarget+"="+tg.URL)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill once the child has delivered a few steps, at a random
		// moment, so that steps are in flight.
		deadline := time.Now().Add(10 * time.Second)
		for accepted() < before+5+round*3 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("child ended by itself (%v) before the kill:\n%s", err, out.String())
		}
		kills++
	}

	// Restart in-process and let everything finish.
	s, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	startRunner(t, RunnerConfig{Store: s, Renderer: crashRenderer(tg.URL)})
	for _, id := range ids {
		ex := waitExecution(t, s, id, func(ex *alorules.Execution) bool { return ex.Status.Final() })
		if ex.Status != alorules.StatusSucceeded {
			t.Errorf("execution %s: got %s (%s), want succeeded", id, ex.Status, ex.Error)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for i := range executions {
		for j := range crashSteps {
			key := fmt.Sprintf("ev%d:crash:%d", i, j)
			switch n := delivered[key]; {
			case n == 0:
				t.Errorf("step %s never delivered", key)
			case n > 1:
				dups += n - 1
			}
		}
	}
	t.Logf("%d kills, %d steps, %d accepted deliveries (%d duplicates from interrupted attempts)", kills, executions*crashSteps, total, dups)
}
