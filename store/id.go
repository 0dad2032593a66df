package store

import (
	"encoding/base32"
	"encoding/binary"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// An id is 8 bytes of big-endian Unix nanoseconds followed by 4 random
// bytes, written in base32 with the alphabet 0-9a-v. That alphabet is in
// ASCII order, so for ids of one length the string order is the byte order
// is the time order: bbolt keys made of ids sort by time and a page of
// "newest first" is a cursor walk, not a scan.
const (
	idTimeBytes = 8
	idRandBytes = 4
	idBytes     = idTimeBytes + idRandBytes
)

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// idLen is the length of every id NewID returns.
var idLen = idEncoding.EncodedLen(idBytes)

// lastIDNanos is the time part of the newest id made in this process.
var lastIDNanos atomic.Int64

// NewID returns a new id for something that happened at t: time-ordered,
// lexicographically sortable, URL-safe and unique. Within one process ids are
// strictly increasing even if t does not advance or steps back, so two events
// received in the same nanosecond, or across a clock adjustment, still sort
// in the order they were accepted; the time IDTime reads back is then at most
// that much later than t.
func NewID(t time.Time) string {
	n := unixNanos(t)
	for {
		last := lastIDNanos.Load()
		if n <= last {
			n = last + 1
		}
		if lastIDNanos.CompareAndSwap(last, n) {
			break
		}
	}
	return encodeID(n, rand.Uint32())
}

// encodeID writes the id for nanosecond n with the given random part.
func encodeID(n int64, random uint32) string {
	var b [idBytes]byte
	binary.BigEndian.PutUint64(b[:idTimeBytes], uint64(n))
	binary.BigEndian.PutUint32(b[idTimeBytes:], random)
	return idEncoding.EncodeToString(b[:])
}

// idFloor is the smallest id NewID could return for t: every id made at or
// after t sorts at or above it, every id made before t below it. It turns a
// time range into a key range.
func idFloor(t time.Time) string { return encodeID(unixNanos(t), 0) }

// IDTime returns the time an id was made for, and false if id is not one
// NewID made. Retention and "events since" read time from keys this way
// without loading the records.
func IDTime(id string) (time.Time, bool) {
	if len(id) != idLen {
		return time.Time{}, false
	}
	b, err := idEncoding.DecodeString(id)
	if err != nil || len(b) != idBytes {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b))).UTC(), true
}

// unixNanos is t in Unix nanoseconds, clamped to the range ids can hold:
// times before 1970 (including the zero time) become 0.
func unixNanos(t time.Time) int64 {
	if t.Before(time.Unix(0, 0)) {
		return 0
	}
	if t.After(maxTime) {
		return maxTime.UnixNano()
	}
	return t.UnixNano()
}

// maxTime is the latest time a 63-bit nanosecond count can hold.
var maxTime = time.Unix(0, 1<<63-1)
