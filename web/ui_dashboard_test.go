package web

import (
	"fmt"
	"testing"
	"time"

	"alorules/store"
)

func TestHourChart(t *testing.T) {
	now := time.Date(2026, 3, 10, 14, 25, 0, 0, time.UTC)
	first := time.Date(2026, 3, 9, 15, 0, 0, 0, time.UTC) // 23 hours before now's hour
	hour := func(h int) time.Time { return first.Add(time.Duration(h) * time.Hour) }
	tests := []struct {
		name   string
		now    time.Time
		hourly []store.HourStat
		// bars maps a bar's index to its hits and failures; others are 0.
		bars           map[int][2]int
		hits, failures int
	}{
		{"no data", now, nil, nil, 0, 0},
		{"now's hour is the last bar", now, []store.HourStat{{Hour: hour(23), Hits: 3}},
			map[int][2]int{23: {3, 0}}, 3, 0},
		{"the first hour is the first bar", now, []store.HourStat{{Hour: hour(0), Hits: 1, Failures: 1}},
			map[int][2]int{0: {1, 1}}, 1, 1},
		{"the 25th hour back is left out", now, []store.HourStat{{Hour: hour(-1), Hits: 7, Failures: 2}, {Hour: hour(5), Hits: 1}},
			map[int][2]int{5: {1, 0}}, 1, 0},
		{"an hour after now's is left out", now, []store.HourStat{{Hour: hour(24), Hits: 5}},
			nil, 0, 0},
		{"hits and failures in the same hour", now, []store.HourStat{{Hour: hour(19), Hits: 4, Failures: 2}, {Hour: hour(20), Failures: 1}},
			map[int][2]int{19: {4, 2}, 20: {0, 1}}, 4, 3},
		{"now in another zone is the same instant", now.In(time.FixedZone("IST", 5*3600+1800)),
			[]store.HourStat{{Hour: hour(23), Hits: 2}}, map[int][2]int{23: {2, 0}}, 2, 0},
		{"now on the hour", first.Add(23 * time.Hour), []store.HourStat{{Hour: hour(-1), Hits: 1}, {Hour: hour(23), Hits: 1}},
			map[int][2]int{23: {1, 0}}, 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := hourChart(tc.hourly, tc.now)
			if len(ch.Bars) != 24 {
				t.Fatalf("got %d bars, want 24", len(ch.Bars))
			}
			if !ch.Since.Equal(first) {
				t.Errorf("got the chart starting at %s, want %s", ch.Since, first)
			}
			for i, b := range ch.Bars {
				if want := hour(i); !b.Hour.Equal(want) {
					t.Errorf("bar %d: got hour %s, want %s", i, b.Hour, want)
				}
				if want := i * (chartBarW + chartGap); b.X != want {
					t.Errorf("bar %d: got x %d, want %d", i, b.X, want)
				}
				n := tc.bars[i]
				if want := fmt.Sprintf("%d hits, %d failures", n[0], n[1]); b.Counts != want {
					t.Errorf("bar %d: got %q, want %q", i, b.Counts, want)
				}
				if (b.HitH > 0) != (n[0] > 0) || (b.FailH > 0) != (n[1] > 0) {
					t.Errorf("bar %d: got heights %d (hits) and %d (failures) for %v", i, b.HitH, b.FailH, n)
				}
				if b.HitY+b.HitH != chartHeight || b.FailY+b.FailH != chartHeight {
					t.Errorf("bar %d: got bars that do not stand on the baseline: %+v", i, b)
				}
			}
			if ch.Hits != tc.hits || ch.Failures != tc.failures {
				t.Errorf("got %d hits and %d failures, want %d and %d", ch.Hits, ch.Failures, tc.hits, tc.failures)
			}
			if want := fmt.Sprintf("%d hits and %d failures in the last 24 hours, per hour", tc.hits, tc.failures); ch.Label != want {
				t.Errorf("got label %q, want %q", ch.Label, want)
			}
			if want := 24*(chartBarW+chartGap) - chartGap; ch.W != want {
				t.Errorf("got width %d, want %d", ch.W, want)
			}
		})
	}
}

// TestHourChartScale: the highest bar fills the chart, the others are in
// proportion, and a small non-zero count stays visible.
func TestHourChartScale(t *testing.T) {
	now := time.Date(2026, 3, 10, 14, 25, 0, 0, time.UTC)
	h := now.Truncate(time.Hour)
	ch := hourChart([]store.HourStat{{Hour: h, Hits: 4, Failures: 2}, {Hour: h.Add(-time.Hour), Hits: 100}}, now)
	tests := []struct {
		name      string
		got, want int
	}{
		{"the peak fills the chart", ch.Bars[22].HitH, chartHeight},
		{"hits in proportion, at least 2", ch.Bars[23].HitH, 2},
		{"failures at least 2", ch.Bars[23].FailH, 2},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}
