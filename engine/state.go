package engine

import (
	"slices"
	"strconv"
	"strings"

	"alorules"
)

// Rules over time compare an event with the last payload seen for the
// same entity. Payloads are the decoded JSON of decodeJSON: maps, slices,
// strings, ints, float64s, bools and nil.

// changes answers changed(path) for one event: cur is its payload, prev
// the entity's previous payload (nil when there is none).
type changes struct {
	cur, prev any
}

// changed reports whether the value at a dot-separated path (relative to
// the payload: "action.status", "action.assignees.0.id") differs between
// the previous payload and this one. With no previous payload, a path
// counts as changed when it has a value now: the first event about an
// action "changes" its status from nothing to something.
func (c *changes) changed(path string) bool {
	return c.changedAt(splitPath(path))
}

func (c *changes) changedAt(segs []string) bool {
	now := lookup(c.cur, segs)
	if c.prev == nil {
		return now != nil
	}
	return !equalJSON(now, lookup(c.prev, segs))
}

// splitPath cuts a dot-separated path into its segments; "" is the whole
// payload.
func splitPath(path string) []string {
	if path == "" {
		return nil
	}
	return strings.Split(path, ".")
}

// lookup follows segs from v: keys of objects, indexes of arrays. A
// missing step gives nil.
func lookup(v any, segs []string) any {
	for _, s := range segs {
		switch x := v.(type) {
		case map[string]any:
			v = x[s]
		case []any:
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// equalJSON compares two decoded JSON values. Numbers compare by value (1
// and 1.0 are the same number).
func equalJSON(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case int:
		switch y := b.(type) {
		case int:
			return x == y
		case float64:
			return float64(x) == y
		}
		return false
	case float64:
		switch y := b.(type) {
		case int:
			return x == float64(y)
		case float64:
			return x == y
		}
		return false
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, xv := range x {
			yv, ok := y[k]
			if !ok || !equalJSON(xv, yv) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return false
}

// diffPaths lists the leaf paths whose values differ between prev and
// cur, sorted, at most alorules.MaxChanged of them, and how many more
// there were. Arrays are walked by index; a value that changes kind
// (object to string, say) is one changed path. Maps are walked in their
// own order and the (usually few) differences sorted after, which costs
// far less than sorting the keys of every object on the way.
func diffPaths(prev, cur any) (paths []string, more int) {
	d := differ{stack: make([]string, 0, 16)}
	d.walk(prev, cur)
	return sortedPaths(d.paths)
}

// sortedPaths sorts the changed paths and keeps alorules.MaxChanged of
// them, counting the rest.
func sortedPaths(paths []string) ([]string, int) {
	if len(paths) == 0 {
		return nil, 0
	}
	slices.Sort(paths)
	if len(paths) > alorules.MaxChanged {
		return paths[:alorules.MaxChanged:alorules.MaxChanged], len(paths) - alorules.MaxChanged
	}
	return paths, 0
}

type differ struct {
	paths []string
	stack []string // the path being walked; joined only for a difference
}

func (d *differ) add() { d.paths = append(d.paths, strings.Join(d.stack, ".")) }

func (d *differ) push(key string) { d.stack = append(d.stack, key) }

func (d *differ) pop() { d.stack = d.stack[:len(d.stack)-1] }

func (d *differ) walk(prev, cur any) {
	switch c := cur.(type) {
	case map[string]any:
		p, ok := prev.(map[string]any)
		if !ok {
			break
		}
		shared := 0
		for k, cv := range c {
			pv, had := p[k]
			if had {
				shared++
				if sameLeaf(pv, cv) {
					continue // most of a payload: no push, no call
				}
			}
			d.push(k)
			if had {
				d.walk(pv, cv)
			} else {
				d.leaves(cv)
			}
			d.pop()
		}
		if shared == len(p) {
			return // no key of prev is missing from cur
		}
		for k, pv := range p {
			if _, has := c[k]; !has {
				d.push(k)
				d.leaves(pv)
				d.pop()
			}
		}
		return
	case []any:
		p, ok := prev.([]any)
		if !ok {
			break
		}
		for i := range max(len(c), len(p)) {
			d.push(strconv.Itoa(i))
			switch {
			case i >= len(p):
				d.leaves(c[i])
			case i >= len(c):
				d.leaves(p[i])
			default:
				d.walk(p[i], c[i])
			}
			d.pop()
		}
		return
	}
	if !equalJSON(prev, cur) {
		d.add()
	}
}

// sameLeaf reports whether a and b are equal scalars (strings, numbers of
// one kind, booleans, nulls): the common case, settled inline.
func sameLeaf(a, b any) bool {
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return ok && x == y
	case int:
		y, ok := b.(int)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case nil:
		return b == nil
	}
	return false
}

// leaves adds every leaf path under v: a subtree that appeared or went.
func (d *differ) leaves(v any) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			d.add()
		}
		for k, e := range x {
			d.push(k)
			d.leaves(e)
			d.pop()
		}
	case []any:
		if len(x) == 0 {
			d.add()
		}
		for i, e := range x {
			d.push(strconv.Itoa(i))
			d.leaves(e)
			d.pop()
		}
	default:
		d.add()
	}
}
