package engine

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
	"unicode/utf8"
)

// diffRaw is diffPaths on the JSON text of the two payloads: the same
// paths, and an error exactly when prev would not decode (decodePayload),
// but without a decoded previous payload, which costs as much as the event
// to decode, or as much again in garbage collection to keep decoded. cur
// must be a payload that decodes.
//
// Both texts are walked side by side. Members and elements whose text is
// the same are equal without being decoded, which is nearly all of a
// payload. Where the text differs, the two values are decoded and compared
// as diffPaths does: scalars (1 and 1.0 are the same number, "\u0041" is
// "A"), values of another kind, and objects whose keys are not the same in
// the same order or that repeat a key.
func diffRaw(prev, cur []byte) ([]string, int, error) {
	prev, cur = blankObject(prev), blankObject(cur)
	if bytes.Equal(prev, cur) {
		return nil, 0, nil
	}
	w := rawDiffs.Get().(*rawDiff)
	defer w.release()
	w.p, w.c = rawText{b: prev}, rawText{b: cur}
	w.p.space()
	w.c.space()
	if err := w.value(0); err != nil {
		return nil, 0, err
	}
	w.p.space()
	w.c.space()
	if w.p.i != len(w.p.b) || w.c.i != len(w.c.b) {
		return nil, 0, errors.New("data after the JSON value")
	}
	paths, more := sortedPaths(w.d.paths)
	return paths, more, nil
}

// rawDiffs keeps the walkers' stacks from one event to the next.
var rawDiffs = sync.Pool{New: func() any {
	return &rawDiff{segs: make([]pathSeg, 0, 8), keys: make([][]byte, 0, 64), d: differ{stack: make([]string, 0, 8)}}
}}

// release returns w to rawDiffs, holding on to no text or paths.
func (w *rawDiff) release() {
	w.p, w.c = rawText{}, rawText{}
	w.d.paths = nil
	clear(w.d.stack[:cap(w.d.stack)])
	clear(w.segs[:cap(w.segs)])
	clear(w.keys[:cap(w.keys)])
	w.d.stack, w.segs, w.keys = w.d.stack[:0], w.segs[:0], w.keys[:0]
	rawDiffs.Put(w)
}

// blankObject is decodePayload's reading of an empty body: {}.
func blankObject(b []byte) []byte {
	if len(bytes.TrimSpace(b)) == 0 {
		return []byte("{}")
	}
	return b
}

// rawDiff walks prev (p) and cur (c) side by side. The text of cur is
// known to decode, so where p's text is the same as c's it is valid too
// and is not checked again; where it differs it is checked as decodeJSON
// would.
type rawDiff struct {
	p, c rawText
	d    differ
	// segs is the path being walked, turned into strings only when a
	// difference is found.
	segs []pathSeg
	// keys are the keys of the objects being walked, for repeatsKey.
	keys [][]byte
}

// pathSeg is an object key (its text, quotes included) or an array index.
type pathSeg struct {
	key []byte // nil for an index
	idx int
}

func (s pathSeg) String() string {
	switch {
	case s.key == nil:
		return strconv.Itoa(s.idx)
	case plainKey(s.key):
		return string(s.key[1 : len(s.key)-1])
	}
	d := jsonDecoder{b: s.key, s: string(s.key)}
	k, _ := d.str() // checked when it was read
	return k
}

// plainKey reports whether a key's text is its value: ASCII, no escapes.
func plainKey(k []byte) bool {
	for _, c := range k {
		if c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// path puts the path being walked into the differ's stack.
func (w *rawDiff) path() {
	w.d.stack = w.d.stack[:0]
	for _, s := range w.segs {
		w.d.stack = append(w.d.stack, s.String())
	}
}

// value compares the values at p and c (each at the start of a value),
// which are depth containers deep, and moves both past them.
func (w *rawDiff) value(depth int) error {
	if w.p.i < len(w.p.b) && w.c.i < len(w.c.b) {
		switch pc, cc := w.p.b[w.p.i], w.c.b[w.c.i]; {
		case pc == '{' && cc == '{':
			return w.object(depth + 1)
		case pc == '[' && cc == '[':
			return w.array(depth + 1)
		case pc == '"' && cc == '"':
			if w.same(w.c.stringLen()) {
				return nil
			}
		}
	}
	ps, err := w.p.skip(depth)
	if err != nil {
		return err
	}
	cs, err := w.c.skip(depth)
	if err != nil {
		return err
	}
	if bytes.Equal(ps, cs) {
		return nil
	}
	return w.decoded(ps, cs)
}

// same moves p and c past their next n bytes if those are the same.
func (w *rawDiff) same(n int) bool {
	if len(w.p.b)-w.p.i < n || !bytes.Equal(w.p.b[w.p.i:w.p.i+n], w.c.b[w.c.i:w.c.i+n]) {
		return false
	}
	w.p.i += n
	w.c.i += n
	return true
}

// decoded compares two values the way diffPaths does.
func (w *rawDiff) decoded(ps, cs []byte) error {
	pv, err := decodeValue(ps)
	if err != nil {
		return err
	}
	cv, err := decodeValue(cs)
	if err != nil {
		return err
	}
	w.path()
	w.d.walk(pv, cv)
	return nil
}

// decodeValue decodes one value; a scalar without decodeJSON's stacks.
func decodeValue(b []byte) (any, error) {
	if b[0] == '{' || b[0] == '[' {
		return decodeJSON(b)
	}
	d := jsonDecoder{b: b, s: string(b)}
	v, err := d.value()
	if err == nil && d.i != len(b) {
		err = errRawJSON
	}
	return v, err
}

// object compares two objects (at their '{', depth deep including
// themselves) member by member while their keys agree; otherwise the two
// are compared decoded.
func (w *rawDiff) object(depth int) error {
	if depth > maxJSONDepth {
		return errJSONDepth
	}
	ps, cs := w.p.i, w.c.i
	mark, nsegs, nkeys := len(w.d.paths), len(w.segs), len(w.keys)
	w.p.i++
	w.c.i++
	w.p.space()
	w.c.space()
	pEmpty, cEmpty := w.p.at('}'), w.c.at('}')
	if pEmpty || cEmpty {
		if pEmpty && cEmpty {
			w.p.i++
			w.c.i++
			return nil
		}
		return w.reshape(ps, cs, mark, nsegs, nkeys, depth)
	}
	for {
		k, same, err := w.key()
		if err != nil {
			return err
		}
		if !same {
			return w.reshape(ps, cs, mark, nsegs, nkeys, depth)
		}
		w.segs = append(w.segs, pathSeg{key: k})
		w.keys = append(w.keys, k)
		if err := w.value(depth); err != nil {
			return err
		}
		w.segs = w.segs[:nsegs]
		pc, err := w.p.after('}')
		if err != nil {
			return err
		}
		cc, err := w.c.after('}')
		if err != nil {
			return err
		}
		if pc != cc {
			return w.reshape(ps, cs, mark, nsegs, nkeys, depth)
		}
		if pc == '}' {
			break
		}
	}
	// A repeated key keeps only its last value once decoded: the members
	// compared one by one may then have reported what nobody sees.
	if len(w.d.paths) > mark && repeatsKey(w.keys[nkeys:]) {
		return w.reshape(ps, cs, mark, nsegs, nkeys, depth)
	}
	w.keys = w.keys[:nkeys]
	return nil
}

// key reads the keys at p and c with the ':' after them and reports
// whether they are the same text.
func (w *rawDiff) key() (k []byte, same bool, err error) {
	if !w.p.at('"') || !w.c.at('"') {
		return nil, false, errRawJSON
	}
	k = w.c.b[w.c.i : w.c.i+w.c.stringLen()]
	if !w.same(len(k)) {
		return nil, false, nil
	}
	if err := w.p.colon(); err != nil {
		return nil, false, err
	}
	return k, true, w.c.colon()
}

// reshape goes back to the objects' starts and compares them decoded.
func (w *rawDiff) reshape(ps, cs, mark, nsegs, nkeys, depth int) error {
	w.d.paths, w.segs, w.keys = w.d.paths[:mark], w.segs[:nsegs], w.keys[:nkeys]
	w.p.i, w.c.i = ps, cs
	pt, err := w.p.skip(depth - 1)
	if err != nil {
		return err
	}
	ct, err := w.c.skip(depth - 1)
	if err != nil {
		return err
	}
	return w.decoded(pt, ct)
}

// array compares two arrays element by element; the elements of the
// longer one beyond the other's end are changed leaves.
func (w *rawDiff) array(depth int) error {
	if depth > maxJSONDepth {
		return errJSONDepth
	}
	w.p.i++
	w.c.i++
	w.p.space()
	w.c.space()
	pDone, cDone := w.p.at(']'), w.c.at(']')
	if pDone {
		w.p.i++
	}
	if cDone {
		w.c.i++
	}
	i := 0
	for ; !pDone && !cDone; i++ {
		w.segs = append(w.segs, pathSeg{idx: i})
		if err := w.value(depth); err != nil {
			return err
		}
		w.segs = w.segs[:len(w.segs)-1]
		pc, err := w.p.after(']')
		if err != nil {
			return err
		}
		cc, err := w.c.after(']')
		if err != nil {
			return err
		}
		pDone, cDone = pc == ']', cc == ']'
	}
	if err := w.rest(&w.p, pDone, i, depth); err != nil {
		return err
	}
	return w.rest(&w.c, cDone, i, depth)
}

// rest lists the leaves of the remaining elements of t's array, from
// index i on.
func (w *rawDiff) rest(t *rawText, done bool, i, depth int) error {
	for ; !done; i++ {
		s, err := t.skip(depth)
		if err != nil {
			return err
		}
		v, err := decodeValue(s)
		if err != nil {
			return err
		}
		w.segs = append(w.segs, pathSeg{idx: i})
		w.path()
		w.segs = w.segs[:len(w.segs)-1]
		w.d.leaves(v)
		c, err := t.after(']')
		if err != nil {
			return err
		}
		done = c == ']'
	}
	return nil
}

// repeatsKey reports whether an object's keys (their text) name one
// member twice.
func repeatsKey(keys [][]byte) bool {
	plain := len(keys) <= 32
	for _, k := range keys {
		plain = plain && plainKey(k)
	}
	if plain {
		for i := range keys {
			for j := range i {
				if bytes.Equal(keys[i], keys[j]) {
					return true
				}
			}
		}
		return false
	}
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		s := pathSeg{key: k}.String()
		if seen[s] {
			return true
		}
		seen[s] = true
	}
	return false
}

// rawText scans JSON text, accepting exactly what decodeJSON accepts.
type rawText struct {
	b []byte
	i int
}

var errRawJSON = errors.New("invalid JSON")

func (t *rawText) space() {
	for t.i < len(t.b) && t.b[t.i] <= ' ' {
		switch t.b[t.i] {
		case ' ', '\t', '\n', '\r':
			t.i++
		default:
			return
		}
	}
}

func (t *rawText) at(c byte) bool { return t.i < len(t.b) && t.b[t.i] == c }

// after moves past the ',' or the closing byte that follows a member or an
// element (and the space after a ',') and says which it was.
func (t *rawText) after(closing byte) (byte, error) {
	t.space()
	if t.i >= len(t.b) {
		return 0, errRawJSON
	}
	c := t.b[t.i]
	if c != ',' && c != closing {
		return 0, errRawJSON
	}
	t.i++
	if c == ',' {
		t.space()
	}
	return c, nil
}

// colon moves past the ':' after an object key, with the space around it.
func (t *rawText) colon() error {
	t.space()
	if !t.at(':') {
		return errRawJSON
	}
	t.i++
	t.space()
	return nil
}

// stringLen is the length of the string at t.i, quotes included, for a
// text known to decode: it looks for the closing quote only.
func (t *rawText) stringLen() int {
	i := t.i + 1
	for {
		j := bytes.IndexByte(t.b[i:], '"')
		if j < 0 {
			return len(t.b) - t.i
		}
		i += j
		escaped := false
		for k := i - 1; k > t.i && t.b[k] == '\\'; k-- {
			escaped = !escaped
		}
		if !escaped {
			return i + 1 - t.i
		}
		i++
	}
}

// skip moves past one value (depth containers deep) and returns its text.
func (t *rawText) skip(depth int) ([]byte, error) {
	start := t.i
	if err := t.skipValue(depth); err != nil {
		return nil, err
	}
	return t.b[start:t.i], nil
}

func (t *rawText) skipValue(depth int) error {
	if t.i >= len(t.b) {
		return errRawJSON
	}
	switch c := t.b[t.i]; {
	case c == '{':
		return t.skipContainer(depth+1, '}', true)
	case c == '[':
		return t.skipContainer(depth+1, ']', false)
	case c == '"':
		return t.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return t.number()
	case c == 't':
		return t.literal("true")
	case c == 'f':
		return t.literal("false")
	case c == 'n':
		return t.literal("null")
	}
	return errRawJSON
}

func (t *rawText) skipContainer(depth int, closing byte, object bool) error {
	if depth > maxJSONDepth {
		return errJSONDepth
	}
	t.i++
	t.space()
	if t.at(closing) {
		t.i++
		return nil
	}
	for {
		if object {
			if !t.at('"') {
				return errRawJSON
			}
			if err := t.str(); err != nil {
				return err
			}
			if err := t.colon(); err != nil {
				return err
			}
		}
		if err := t.skipValue(depth); err != nil {
			return err
		}
		c, err := t.after(closing)
		if err != nil {
			return err
		}
		if c == closing {
			return nil
		}
	}
}

// str moves past a string, at its opening quote.
func (t *rawText) str() error {
	t.i++
	for t.i < len(t.b) {
		c := t.b[t.i]
		switch {
		case c == '"':
			t.i++
			return nil
		case c < 0x20:
			return errRawJSON
		case c == '\\':
			if t.i+1 >= len(t.b) {
				return errRawJSON
			}
			switch t.b[t.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				t.i += 2
			case 'u':
				if len(t.b)-t.i < 6 || !isHex4(t.b[t.i+2:t.i+6]) {
					return errRawJSON
				}
				t.i += 6
			default:
				return errRawJSON
			}
		default:
			t.i++
		}
	}
	return errRawJSON
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// number moves past a number, with decodeJSON's grammar.
func (t *rawText) number() error {
	if t.b[t.i] == '-' {
		t.i++
	}
	switch {
	case t.at('0'):
		t.i++
	case t.i < len(t.b) && t.b[t.i] >= '1' && t.b[t.i] <= '9':
		t.digits()
	default:
		return errRawJSON
	}
	if t.at('.') {
		t.i++
		if t.digits() == 0 {
			return errRawJSON
		}
	}
	if t.at('e') || t.at('E') {
		t.i++
		if t.at('+') || t.at('-') {
			t.i++
		}
		if t.digits() == 0 {
			return errRawJSON
		}
	}
	return nil
}

func (t *rawText) digits() int {
	start := t.i
	for t.i < len(t.b) && t.b[t.i] >= '0' && t.b[t.i] <= '9' {
		t.i++
	}
	return t.i - start
}

func (t *rawText) literal(word string) error {
	if len(t.b)-t.i < len(word) || string(t.b[t.i:t.i+len(word)]) != word {
		return errRawJSON
	}
	t.i += len(word)
	return nil
}
