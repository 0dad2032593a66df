package store

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// RuleStats are one rule's hits (events it matched) and failures (events
// its condition failed on at run time, or an execution of it failed for)
// since a time, and its last hit ever. Each hour counts an event once per
// rule and kind, in the hour of the match or of the failure: exactly the
// events Events lists for the rule from that hour on.
type RuleStats struct {
	Hits, Failures int
	LastHit        time.Time
	// Hourly holds one entry per hour, oldest first (see Store.RuleStats).
	Hourly []HourStat
}

// HourStat is one hour of a rule's stats.
type HourStat struct {
	Hour           time.Time // start of the hour, UTC
	Hits, Failures int
}

// hourNanos truncates t to the start of its hour in Unix nanoseconds.
func hourNanos(t time.Time) int64 {
	n := unixNanos(t)
	return n - n%int64(time.Hour)
}

// addRuleStat adds hits and failures to rule's bucket for the hour of t;
// a hit also moves the rule's last hit forward.
func addRuleStat(tx *bolt.Tx, rule string, t time.Time, hits, failures int64) error {
	hb := tx.Bucket(bRuleHours)
	k := cat(pfx(rule), u64(hourNanos(t)))
	v := hb.Get(k)
	if err := hb.Put(k, cat(u64(getU64(v)+hits), u64(getU64(getTail(v))+failures))); err != nil {
		return err
	}
	rb := tx.Bucket(bRules)
	rk := name(rule)
	last := getU64(rb.Get(rk))
	if hits > 0 && unixNanos(t) > last {
		last = unixNanos(t)
	}
	return rb.Put(rk, cat(u64(last), []byte(rule)))
}

// getTail returns v after its first 8 bytes, nil if shorter.
func getTail(v []byte) []byte {
	if len(v) < 8 {
		return nil
	}
	return v[8:]
}

// maxFilledHours bounds the hours RuleStats fills with zeros: a chart
// wants every hour of a day or a week, not of all time.
const maxFilledHours = 24 * 62

// RuleStats returns, for every rule that ever had a hit or a failure, its
// counts from the hour containing since onwards and its last hit. Hourly
// has an entry for every hour from since's hour to the current hour (zeros
// included) so that it draws as a chart; when since is zero or further
// back than 62 days it holds only the hours that have data.
func (s *Store) RuleStats(ctx context.Context, since time.Time) (map[string]*RuleStats, error) {
	from := hourNanos(since)
	now := hourNanos(time.Now())
	fill := !since.IsZero() && (now-from)/int64(time.Hour) <= maxFilledHours
	out := map[string]*RuleStats{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		clear(out)
		hb := tx.Bucket(bRuleHours)
		return tx.Bucket(bRules).ForEach(func(_, v []byte) error {
			rule := string(getTail(v))
			rs := &RuleStats{}
			if last := getU64(v); last > 0 {
				rs.LastHit = time.Unix(0, last).UTC()
			}
			next := from // the next hour to fill
			err := eachAsc(hb, pfx(rule), u64(from), func(k, v []byte) (bool, error) {
				h := getU64(k)
				for ; fill && next < h; next += int64(time.Hour) {
					rs.Hourly = append(rs.Hourly, HourStat{Hour: time.Unix(0, next).UTC()})
				}
				hs := HourStat{Hour: time.Unix(0, h).UTC(), Hits: int(getU64(v)), Failures: int(getU64(getTail(v)))}
				rs.Hourly = append(rs.Hourly, hs)
				rs.Hits += hs.Hits
				rs.Failures += hs.Failures
				next = h + int64(time.Hour)
				return true, nil
			})
			for ; fill && next <= now; next += int64(time.Hour) {
				rs.Hourly = append(rs.Hourly, HourStat{Hour: time.Unix(0, next).UTC()})
			}
			out[rule] = rs
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("rule stats: %w", err)
	}
	return out, nil
}
