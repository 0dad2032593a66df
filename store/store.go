// Package store keeps alorules' durable state in one bbolt file: accepted
// events with their dedupe keys, the hand-over queue to the matcher, match
// records, executions as durable jobs with their indexes and run queue,
// throttle keys, rule sets and per-rule statistics.
//
// No bbolt type appears in the exported API, so that another backend (for
// example PostgreSQL, DESIGN.md §10) can offer the same methods.
//
// All writes go through one committer goroutine that runs every request
// waiting at that moment in a single read-write transaction: concurrent
// callers share one fsync without anyone waiting for a timer.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"alorules"
)

// schemaVersion is written to the meta bucket of a new file. Open refuses
// a file written by a newer schema rather than misreading it, and migrates
// an older one. Version 2 says that the rule_events index is complete: a
// build that does not keep it (version 1) refuses the file instead of
// saving matches it leaves out.
const schemaVersion = 2

// initialMmap is 1 GiB where address space is plentiful.
const initialMmap = (strconv.IntSize / 64) << 30

// ErrLocked reports that the store file is held by another process (or by
// another open handle in this one).
var ErrLocked = errors.New("locked by another process")

// Options tune Open.
type Options struct {
	// Timeout is how long Open waits for the file lock before it fails
	// with ErrLocked; 0 means 1s. bbolt itself would wait for ever.
	Timeout time.Duration
	// NoSync skips fsync on commit. Only for tests and benchmarks: after a
	// crash, acknowledged events may be lost.
	NoSync bool
	// ReadOnly opens the file without writing a byte to it (not even the
	// schema), for inspecting a file as a crash or a failed disk left it.
	// Every write then fails.
	ReadOnly bool
}

// Store is the bbolt store. Its methods are safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	// newID makes event and execution ids; tests replace it to make
	// records in the past.
	newID func(time.Time) string

	commits      atomic.Int64 // transactions committed by the committer
	commitFailed atomic.Bool  // the last shared commit failed (see Writable)

	mu     sync.RWMutex // held for reading by every call, for writing by Close
	closed bool
	reqs   chan *writeReq
	done   chan struct{} // closed when the committer has stopped

	// ruleIndex is false only for a read-only open of a file from before
	// schema 2, whose rule_events index is missing or incomplete.
	ruleIndex bool
}

// Open opens or creates the store file at path.
func Open(path string, opt Options) (*Store, error) {
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: timeout,
		NoSync:  opt.NoSync,
		// The hashmap freelist stays fast when a long-lived file has many
		// free pages (after retention pruning).
		FreelistType: bolt.FreelistMapType,
		// Like etcd: the freelist is rebuilt on open instead of written on
		// every commit, which keeps each fsync'd commit smaller.
		NoFreelistSync: true,
		// Growing the map waits for every read transaction to end, so a
		// long Backup to a slow client would stall ingress. Mapping 1 GiB
		// of address space up front (the file does not grow with it)
		// makes that rare.
		InitialMmapSize: initialMmap,
		ReadOnly:        opt.ReadOnly,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w (timeout %s)", path, ErrLocked, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	schema := db.Update
	if opt.ReadOnly {
		schema = db.View
	}
	version := 0
	err = schema(func(tx *bolt.Tx) error {
		var err error
		version, err = initSchema(tx)
		return err
	})
	// A read-only open migrates and writes nothing: the file is looked at
	// as it is.
	if err == nil && version < schemaVersion && !opt.ReadOnly {
		err = migrateRuleEvents(db)
		version = schemaVersion
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		path:      path,
		newID:     NewID,
		reqs:      make(chan *writeReq, 256),
		done:      make(chan struct{}),
		ruleIndex: version >= 2,
	}
	go s.commitLoop()
	return s, nil
}

// initSchema creates the buckets and checks the schema version, which it
// returns; in a read transaction it only checks that they are there. A new
// file gets the current version at once: there is nothing to migrate.
func initSchema(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket(bMeta)
	if meta == nil && !tx.Writable() {
		return 0, fmt.Errorf("bucket %s is missing", bMeta)
	}
	version, fresh := schemaVersion, true
	if meta != nil {
		if v := meta.Get([]byte("schema_version")); v != nil {
			fresh = false
			n, err := strconv.Atoi(string(v))
			if err != nil {
				return 0, fmt.Errorf("bad schema version %q", v)
			}
			if n > schemaVersion {
				return 0, fmt.Errorf("schema version %d is newer than this build supports (%d)", n, schemaVersion)
			}
			version = n
		}
	}
	for _, name := range allBuckets {
		if !tx.Writable() {
			// A file from before schema 2 may not have the index
			// buckets; reads that need them say so.
			if tx.Bucket(name) == nil && (version >= 2 || !isIndexBucket(name)) {
				return 0, fmt.Errorf("bucket %s is missing", name)
			}
			continue
		}
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return 0, fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if fresh && tx.Writable() {
		if err := tx.Bucket(bMeta).Put([]byte("schema_version"), []byte(strconv.Itoa(schemaVersion))); err != nil {
			return 0, err
		}
	}
	return version, nil
}

// Close waits for queued writes to commit and closes the file. Calls after
// Close fail with alorules.ErrStoreClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.reqs)
	s.mu.Unlock()
	<-s.done
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// view runs fn in a read transaction.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return alorules.ErrStoreClosed
	}
	return s.db.View(fn)
}

// Size returns the size of the store file in bytes, 0 if unknown.
func (s *Store) Size() int64 {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Backup writes a consistent copy of the whole store to w from one read
// transaction, while writes go on, and returns the bytes written. The copy
// is a store file that Open accepts.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.view(context.Background(), func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("backup: %w", err)
	}
	return n, nil
}

// Check runs bbolt's consistency check over the whole file and returns
// every problem found, joined; nil if the file is sound.
func (s *Store) Check() error {
	var errs []error
	err := s.view(context.Background(), func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	return errors.Join(errs...)
}

// Commits is how many write transactions the committer has committed: with
// the number of writes, it tells how well concurrent writes share commits.
func (s *Store) Commits() int64 { return s.commits.Load() }
