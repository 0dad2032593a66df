package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"alorules"
)

func TestPersistsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alorules.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ev := newEvent("action_created", time.Now())
	id := mustSave(t, s, ev, DedupeKey{Key: "k1", TTL: time.Hour})
	exs := mustMatch(t, s, id, time.Now(), "r1")
	if err := s.SaveRuleSet(ctx, "h1", []byte("rules: []")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Event(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Payload, ev.Payload) {
		t.Errorf("payload: got %s, want %s", got.Payload, ev.Payload)
	}
	if _, dup, _ := s.SaveEvent(ctx, newEvent("action_created", time.Now()), []DedupeKey{{Key: "k1", TTL: time.Hour}}); !dup {
		t.Errorf("dedupe key after reopen: got duplicate false, want true")
	}
	if _, err := s.Execution(ctx, exs[0].ID); err != nil {
		t.Errorf("execution after reopen: %v", err)
	}
	if src, err := s.RuleSet(ctx, "h1"); err != nil || string(src) != "rules: []" {
		t.Errorf("rule set after reopen: got %q, %v; want %q", src, err, "rules: []")
	}
}

// TestOpenReadOnly: a read-only open reads everything, writes nothing to
// the file (not a byte), and refuses writes.
func TestOpenReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alorules.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := mustSave(t, s, newEvent("action_created", time.Now()))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	readOnly(t, path, func(s *Store) {
		if _, err := s.Event(ctx, id); err != nil {
			t.Errorf("read: %v", err)
		}
		if err := s.Check(); err != nil {
			t.Errorf("check: %v", err)
		}
		if _, _, err := s.SaveEvent(ctx, newEvent("action_created", time.Now()), nil); err == nil {
			t.Error("write: got no error, want one")
		}
	})

	empty := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(empty, Options{ReadOnly: true}); err == nil {
		s.Close()
		t.Error("read-only open of an empty file: got no error, want one")
	}
}

func TestOpenLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alorules.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// A second handle in this process contends for the same flock as a
	// second process would.
	start := time.Now()
	s2, err := Open(path, Options{Timeout: 200 * time.Millisecond})
	took := time.Since(start)
	if err == nil {
		s2.Close()
		t.Fatal("second Open: got nil error, want lock error")
	}
	want := "open store " + path + ": locked by another process (timeout 200ms)"
	if err.Error() != want {
		t.Errorf("error: got %q, want %q", err, want)
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("errors.Is(err, ErrLocked): got false, want true")
	}
	if took > 2*time.Second {
		t.Errorf("second Open took %v, want about the 200ms timeout", took)
	}
}

func TestOpenDefaultTimeoutMessage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alorules.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(path, Options{})
	if err == nil || !strings.HasSuffix(err.Error(), "locked by another process (timeout 1s)") {
		t.Errorf("error: got %v, want it to end in %q", err, "locked by another process (timeout 1s)")
	}
}

func TestOpenNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alorules.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bMeta)
		if err != nil {
			return err
		}
		return b.Put([]byte("schema_version"), []byte("99"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "schema version 99 is newer") {
		t.Errorf("error: got %v, want schema version complaint", err)
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "alorules.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	id := mustSave(t, s, newEvent("a", time.Now()))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	ops := []struct {
		name string
		call func() error
	}{
		{"SaveEvent", func() error { _, _, err := s.SaveEvent(ctx, newEvent("a", time.Now()), nil); return err }},
		{"Event", func() error { _, err := s.Event(ctx, id); return err }},
		{"Events", func() error { _, _, err := s.Events(ctx, EventFilter{}); return err }},
		{"PendingEvents", func() error { _, err := s.PendingEvents(ctx, 1); return err }},
		{"SaveMatch", func() error {
			return s.SaveMatch(ctx, MatchWrite{Match: &alorules.Match{EventID: id}})
		}},
		{"Match", func() error { _, err := s.Match(ctx, id); return err }},
		{"ThrottledUntil", func() error { _, err := s.ThrottledUntil(ctx, "k"); return err }},
		{"AddExecutions", func() error { return s.AddExecutions(ctx, []*alorules.Execution{{EventID: id, Rule: "r"}}) }},
		{"Execution", func() error { _, err := s.Execution(ctx, "x"); return err }},
		{"Executions", func() error { _, _, err := s.Executions(ctx, ExecutionFilter{}); return err }},
		{"EventExecutions", func() error { _, err := s.EventExecutions(ctx, id); return err }},
		{"DueExecutions", func() error { _, err := s.DueExecutions(ctx, time.Now(), 1); return err }},
		{"NextDue", func() error { _, _, err := s.NextDue(ctx); return err }},
		{"UpdateExecution", func() error { return s.UpdateExecution(ctx, &alorules.Execution{ID: "x"}) }},
		{"ResetRunning", func() error { _, err := s.ResetRunning(ctx); return err }},
		{"CountByStatus", func() error { _, err := s.CountByStatus(ctx); return err }},
		{"SaveRuleSet", func() error { return s.SaveRuleSet(ctx, "h", nil) }},
		{"RuleSet", func() error { _, err := s.RuleSet(ctx, "h"); return err }},
		{"RuleStats", func() error { _, err := s.RuleStats(ctx, time.Time{}); return err }},
		{"EventCountSince", func() error { _, err := s.EventCountSince(ctx, time.Time{}); return err }},
		{"Prune", func() error { _, err := s.Prune(ctx, time.Now(), 0); return err }},
		{"Backup", func() error { _, err := s.Backup(&bytes.Buffer{}); return err }},
		{"Check", func() error { return s.Check() }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			if err := op.call(); !errors.Is(err, alorules.ErrStoreClosed) {
				t.Errorf("got %v, want an error wrapping ErrStoreClosed", err)
			}
		})
	}
}

func TestBackup(t *testing.T) {
	s := openTest(t)
	var ids []string
	for range 20 {
		ids = append(ids, mustSave(t, s, newEvent("action_created", time.Now())))
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Backup(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != n {
		t.Errorf("backup size: got %d bytes on disk, Backup said %d", fi.Size(), n)
	}
	b, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Check(); err != nil {
		t.Errorf("check backup: %v", err)
	}
	evs, _, err := b.Events(ctx, EventFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != len(ids) {
		t.Fatalf("events in backup: got %d, want %d", len(evs), len(ids))
	}
	for i, ev := range evs {
		if want := ids[len(ids)-1-i]; ev.ID != want {
			t.Errorf("backup event %d: got %s, want %s", i, ev.ID, want)
		}
	}
	if s.Size() <= 0 {
		t.Errorf("Size: got %d, want > 0", s.Size())
	}
}

func TestBackupWhileWriting(t *testing.T) {
	s := openTest(t)
	for range 50 {
		mustSave(t, s, newEvent("a", time.Now()))
	}
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			mustSave(t, s, newEvent("a", time.Now()))
			n++
		}
	}()
	var buf bytes.Buffer
	_, err := s.Backup(&buf)
	close(stop)
	written := <-done
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Check(); err != nil {
		t.Errorf("check backup: %v", err)
	}
	n, err := b.EventCountSince(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if n < 50 || n > 50+written {
		t.Errorf("events in backup: got %d, want between 50 and %d", n, 50+written)
	}
	if got := bucketLen(t, b, bEvents); got != n {
		t.Errorf("event keys in backup: got %d, counter says %d", got, n)
	}
}
