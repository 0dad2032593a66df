package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"

	bolt "go.etcd.io/bbolt"
)

// Top-level buckets. Keys made of ids sort by time (see id.go); index keys
// are a prefix of length-prefixed names followed by an id, so one index
// holds many names and a cursor walks one name's ids in time order.
var (
	bMeta       = []byte("meta")             // "schema_version" -> decimal
	bEvents     = []byte("events")           // event id -> encoded event
	bEvType     = []byte("events_type")      // pfx(type)+event id -> nil
	bDedupe     = []byte("dedupe")           // key -> 8-byte expiry nanos + event id
	bPending    = []byte("pending")          // event id -> nil: stored, not matched yet
	bMatches    = []byte("matches")          // event id -> Match JSON
	bUnmatched  = []byte("unmatched")        // event id -> nil: matched no rule
	bExecs      = []byte("executions")       // execution id -> encoded execution
	bExRule     = []byte("exec_rule")        // pfx(rule)+id -> nil
	bExStatus   = []byte("exec_status")      // pfx(status)+id -> nil
	bExRuleSt   = []byte("exec_rule_status") // pfx(rule, status)+id -> nil
	bExEvent    = []byte("exec_event")       // pfx(event id)+id -> status
	bQueue      = []byte("queue")            // 8-byte due nanos + id -> nil
	bThrottles  = []byte("throttles")        // key -> 8-byte until nanos
	bRuleSets   = []byte("rulesets")         // hash -> source
	bCounts     = []byte("counts")           // counter name -> 8-byte int64
	bRuleHours  = []byte("rule_hours")       // pfx(rule)+8-byte hour nanos -> hits, failures
	bRules      = []byte("rules")            // name(rule) -> 8-byte last hit nanos + rule name
	bEntities   = []byte("entities")         // name(entity) -> encoded entity state
	bEntAge     = []byte("entities_updated") // 8-byte updated nanos + name(entity) -> nil
	bTimers     = []byte("timers")           // timer id -> Timer JSON
	bTimerDue   = []byte("timers_due")       // 8-byte due nanos + timer id -> nil
	bTimerKey   = []byte("timers_entity")    // pfx(entity, rule) -> timer id
	bDigests    = []byte("digests")          // digest id -> Digest JSON
	bDigestDue  = []byte("digests_due")      // 8-byte due nanos + digest id -> nil
	bDigestKey  = []byte("digests_key")      // pfx(rule, key) -> digest id
	bEventRefs  = []byte("event_refs")       // pfx(event id)+timer or digest id -> nil: keeps the event
	bRuleEvents = []byte("rule_events")      // pfx(rule, RuleMatched or RuleFailed)+hourKey+event id -> 8-byte nanos
	// pfx(event id)+rule_events key -> nil: an event's entries there
	bRuleEventRefs = []byte("rule_events_event")
)

var allBuckets = [][]byte{
	bMeta, bEvents, bEvType, bDedupe, bPending, bMatches,
	bUnmatched, bExecs, bExRule, bExStatus, bExRuleSt, bExEvent, bQueue,
	bThrottles, bRuleSets, bCounts, bRuleHours, bRules,
	bEntities, bEntAge, bTimers, bTimerDue, bTimerKey, bDigests, bDigestDue, bDigestKey, bEventRefs, bRuleEvents,
	bRuleEventRefs,
}

// indexBuckets are built by the migration to schema 2; a file from before
// it may lack them.
var indexBuckets = [][]byte{bRuleEvents, bRuleEventRefs}

func isIndexBucket(name []byte) bool {
	for _, b := range indexBuckets {
		if bytes.Equal(b, name) {
			return true
		}
	}
	return false
}

// Counter names in bCounts.
const (
	countEvents = "events"
	// countEventHour+8-byte hour nanos counts the events whose id falls in
	// that hour, so that "events in the last day" adds 24 counters
	// instead of walking every key.
	countEventHour    = "evhour:"
	countStatusPrefix = "status:"
	countEntities     = "entities"
	countTimers       = "timers"
	countDigests      = "digests"
)

// maxName is the longest name used as is inside a key. bbolt refuses keys
// over 32 KiB; an event type, rule name or dedupe key is chosen by others,
// so a longer one is replaced by its hash instead of failing the write.
const maxName = 512

// name returns the key bytes that stand for s.
func name(s string) []byte {
	if len(s) <= maxName {
		return []byte(s)
	}
	sum := sha256.Sum256([]byte(s))
	return append([]byte("\x00sha256:"), hex.EncodeToString(sum[:])...)
}

// pfx builds an index prefix from names, each preceded by its 2-byte
// length so that no name is a prefix of another's entries (a type "a" must
// not list the events of type "a:b").
func pfx(names ...string) []byte {
	var p []byte
	for _, s := range names {
		n := name(s)
		p = binary.BigEndian.AppendUint16(p, uint16(len(n)))
		p = append(p, n...)
	}
	return p
}

// cat concatenates key parts into a new slice.
func cat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

// u64 is n as 8 big-endian bytes; for times, clamped at 0 so they sort.
func u64(n int64) []byte {
	if n < 0 {
		n = 0
	}
	return binary.BigEndian.AppendUint64(nil, uint64(n))
}

// getU64 reads 8 big-endian bytes, 0 if there are fewer.
func getU64(b []byte) int64 {
	if len(b) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

// addCount adds delta to the counter called key.
func addCount(tx *bolt.Tx, key string, delta int64) error {
	b := tx.Bucket(bCounts)
	n := getU64(b.Get([]byte(key))) + delta
	if n == 0 {
		return b.Delete([]byte(key))
	}
	return b.Put([]byte(key), u64(n))
}

// prefixEnd is the smallest key greater than every key that starts with p,
// or nil if there is none (p empty or all 0xff).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// eachDesc calls fn with the id part of each key under prefix p, newest
// first, for ids below ceil (no bound if empty) and not below floor (no
// bound if empty), until fn returns false. The id and value are only valid
// during the call.
func eachDesc(b *bolt.Bucket, p []byte, ceil, floor string, fn func(id, v []byte) (bool, error)) error {
	c := b.Cursor()
	var target []byte
	if ceil != "" {
		target = cat(p, []byte(ceil))
	} else {
		target = prefixEnd(p)
	}
	var k, v []byte
	if target == nil {
		k, v = c.Last()
	} else if k, _ = c.Seek(target); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	for ; k != nil && bytes.HasPrefix(k, p); k, v = c.Prev() {
		id := k[len(p):]
		if floor != "" && string(id) < floor {
			return nil
		}
		more, err := fn(id, v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// eachAsc calls fn with the rest of each key under prefix p after start
// (inclusive; from the first if empty), oldest first, until fn returns
// false.
func eachAsc(b *bolt.Bucket, p, start []byte, fn func(rest, v []byte) (bool, error)) error {
	c := b.Cursor()
	for k, v := c.Seek(cat(p, start)); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		more, err := fn(k[len(p):], v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// appendOnly returns a bucket whose keys arrive mostly in increasing order
// (ids, times), set to fill its pages before splitting them. bbolt splits
// at half a page by default, which suits random inserts; for appends it
// leaves every page half empty, so the file and every commit's writes are
// twice as large as they need be.
func appendOnly(tx *bolt.Tx, name []byte) *bolt.Bucket {
	b := tx.Bucket(name)
	b.FillPercent = 0.95
	return b
}

// addEventCount counts one event more (or less) in total and in the hour of
// its id.
func addEventCount(tx *bolt.Tx, id []byte, delta int64) error {
	if err := addCount(tx, countEvents, delta); err != nil {
		return err
	}
	t, ok := IDTime(string(id))
	if !ok {
		return nil
	}
	return addCount(tx, countEventHour+string(u64(hourNanos(t))), delta)
}
