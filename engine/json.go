package engine

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Every event is decoded once before its rules run, so decoding is on the
// hot path of matching: encoding/json's reflective decoder into any costs
// more than evaluating a hundred conditions. decodeJSON is a small
// single-pass decoder for exactly what expressions need, giving the same
// values as encoding/json with UseNumber followed by convertNumbers (a fuzz
// test holds the two together).

// maxJSONDepth bounds nesting; ingress already refuses more than 64 levels,
// this protects decoding of step response bodies.
const maxJSONDepth = 1000

var errJSONDepth = errors.New("nesting too deep")

type jsonDecoder struct {
	b []byte
	// s is b as one string: strings without escapes are cut from it
	// instead of allocated one by one.
	s     string
	i     int
	depth int
	// stack collects the members of the arrays and objects being
	// decoded, so that each is allocated once at its final size.
	stack []any
	keys  []string
}

// decodeJSON decodes one JSON value filling all of b (surrounding
// whitespace aside).
func decodeJSON(b []byte) (any, error) {
	d := jsonDecoder{b: b, s: string(b), stack: make([]any, 0, 64), keys: make([]string, 0, 64)}
	d.space()
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	d.space()
	if d.i != len(d.b) {
		return nil, d.errorf("data after the JSON value")
	}
	return v, nil
}

func (d *jsonDecoder) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", d.i, fmt.Sprintf(format, args...))
}

func (d *jsonDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *jsonDecoder) value() (any, error) {
	if d.i >= len(d.b) {
		return nil, d.errorf("unexpected end of JSON")
	}
	switch c := d.b[d.i]; {
	case c == '{':
		return d.object()
	case c == '[':
		return d.array()
	case c == '"':
		return d.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	default:
		return nil, d.errorf("invalid character %q", c)
	}
}

func (d *jsonDecoder) literal(word string) error {
	if len(d.b)-d.i < len(word) || string(d.b[d.i:d.i+len(word)]) != word {
		return d.errorf("invalid literal")
	}
	d.i += len(word)
	return nil
}

func (d *jsonDecoder) object() (any, error) {
	if d.depth++; d.depth > maxJSONDepth {
		return nil, errJSONDepth
	}
	defer func() { d.depth-- }()
	d.i++ // {
	base := len(d.keys)
	d.space()
	if d.i < len(d.b) && d.b[d.i] == '}' {
		d.i++
		return map[string]any{}, nil
	}
	for {
		d.space()
		if d.i >= len(d.b) || d.b[d.i] != '"' {
			return nil, d.errorf("want an object key")
		}
		k, err := d.str()
		if err != nil {
			return nil, err
		}
		d.space()
		if d.i >= len(d.b) || d.b[d.i] != ':' {
			return nil, d.errorf("want ':' after an object key")
		}
		d.i++
		d.space()
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		d.keys = append(d.keys, k)
		d.stack = append(d.stack, v)
		d.space()
		if d.i >= len(d.b) {
			return nil, d.errorf("unexpected end of JSON")
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			keys, vals := d.keys[base:], d.stack[len(d.stack)-(len(d.keys)-base):]
			m := make(map[string]any, len(keys))
			for n, k := range keys {
				m[k] = vals[n] // a repeated key: the last one wins
			}
			clear(vals)
			d.stack = d.stack[:len(d.stack)-len(keys)]
			d.keys = d.keys[:base]
			return m, nil
		default:
			return nil, d.errorf("want ',' or '}' in an object")
		}
	}
}

func (d *jsonDecoder) array() (any, error) {
	if d.depth++; d.depth > maxJSONDepth {
		return nil, errJSONDepth
	}
	defer func() { d.depth-- }()
	d.i++ // [
	base := len(d.stack)
	d.space()
	if d.i < len(d.b) && d.b[d.i] == ']' {
		d.i++
		return []any{}, nil
	}
	for {
		d.space()
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		d.stack = append(d.stack, v)
		d.space()
		if d.i >= len(d.b) {
			return nil, d.errorf("unexpected end of JSON")
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			a := make([]any, len(d.stack)-base)
			copy(a, d.stack[base:])
			clear(d.stack[base:])
			d.stack = d.stack[:base]
			return a, nil
		default:
			return nil, d.errorf("want ',' or ']' in an array")
		}
	}
}

// str decodes a string; invalid UTF-8 and lone surrogates become U+FFFD,
// as with encoding/json.
func (d *jsonDecoder) str() (string, error) {
	d.i++ // "
	start := d.i
	// Fast path: no escapes, ASCII or valid UTF-8.
	for d.i < len(d.b) {
		c := d.b[d.i]
		if c == '"' {
			s := d.s[start:d.i]
			d.i++
			return s, nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
		d.i++
	}
	buf := make([]byte, 0, d.i-start+16)
	buf = append(buf, d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return string(buf), nil
		case c < 0x20:
			return "", d.errorf("invalid control character in string")
		case c == '\\':
			if d.i+1 >= len(d.b) {
				return "", d.errorf("unexpected end of JSON")
			}
			e := d.b[d.i+1]
			d.i += 2
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := d.hex4()
				if !ok {
					return "", d.errorf("invalid \\u escape")
				}
				if utf16.IsSurrogate(r) {
					r2 := utf8.RuneError
					save := d.i
					if d.i+1 < len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
						d.i += 2
						if lo, ok := d.hex4(); ok {
							if dec := utf16.DecodeRune(r, lo); dec != utf8.RuneError {
								r2 = dec
							} else {
								d.i = save
							}
						} else {
							return "", d.errorf("invalid \\u escape")
						}
					}
					r = r2
				}
				buf = utf8.AppendRune(buf, r)
			default:
				return "", d.errorf("invalid escape \\%c", e)
			}
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			d.i++
		default:
			r, size := utf8.DecodeRune(d.b[d.i:])
			if r == utf8.RuneError && size == 1 {
				buf = utf8.AppendRune(buf, utf8.RuneError)
			} else {
				buf = append(buf, d.b[d.i:d.i+size]...)
			}
			d.i += size
		}
	}
	return "", d.errorf("unexpected end of JSON in a string")
}

func (d *jsonDecoder) hex4() (rune, bool) {
	if len(d.b)-d.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range d.b[d.i : d.i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	d.i += 4
	return r, true
}

// number decodes a JSON number: an int when it is integral and fits, else
// a float64 (see convertNumbers).
func (d *jsonDecoder) number() (any, error) {
	start := d.i
	if d.b[d.i] == '-' {
		d.i++
	}
	switch {
	case d.i < len(d.b) && d.b[d.i] == '0':
		d.i++
	case d.i < len(d.b) && d.b[d.i] >= '1' && d.b[d.i] <= '9':
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
		}
	default:
		return nil, d.errorf("invalid number")
	}
	integral := true
	if d.i < len(d.b) && d.b[d.i] == '.' {
		integral = false
		d.i++
		if d.i >= len(d.b) || d.b[d.i] < '0' || d.b[d.i] > '9' {
			return nil, d.errorf("invalid number")
		}
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		integral = false
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if d.i >= len(d.b) || d.b[d.i] < '0' || d.b[d.i] > '9' {
			return nil, d.errorf("invalid number")
		}
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
		}
	}
	lit := d.b[start:d.i]
	if integral && len(lit) <= 18 {
		// Fits in int64 for sure: parse by hand, no allocation.
		n, neg := 0, lit[0] == '-'
		for _, c := range lit {
			if c != '-' {
				n = n*10 + int(c-'0')
			}
		}
		if neg {
			n = -n
		}
		return n, nil
	}
	s := string(lit)
	if integral {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return int(n), nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		// Out of float64 range: keep the digits rather than lose them.
		return s, nil
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int(f), nil
	}
	return f, nil
}
