package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// A step's YAML is compiled at load into a template tree: maps, lists,
// constants and template strings. Rendering walks the tree into plain Go
// values; event data only ever becomes values, never template source.
type tnode interface {
	// render produces the value with the machine's environment.
	render(m *machine) (any, error)
	// placeholder produces a value of the right shape without running
	// anything, to validate the step at load.
	placeholder() any
}

type tconst struct{ v any }

func (c tconst) render(*machine) (any, error) { return c.v, nil }
func (c tconst) placeholder() any             { return c.v }

type tmap struct {
	keys []string
	vals []tnode
}

func (t *tmap) render(m *machine) (any, error) {
	out := make(map[string]any, len(t.keys))
	for i, k := range t.keys {
		v, err := t.vals[i].render(m)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

func (t *tmap) placeholder() any {
	out := make(map[string]any, len(t.keys))
	for i, k := range t.keys {
		out[k] = t.vals[i].placeholder()
	}
	return out
}

// get returns the node under key, or nil.
func (t *tmap) get(key string) tnode {
	for i, k := range t.keys {
		if k == key {
			return t.vals[i]
		}
	}
	return nil
}

type tlist []tnode

func (t tlist) render(m *machine) (any, error) {
	out := make([]any, len(t))
	for i, n := range t {
		v, err := n.render(m)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func (t tlist) placeholder() any {
	out := make([]any, len(t))
	for i, n := range t {
		out[i] = n.placeholder()
	}
	return out
}

// escaper says how inserted values are escaped for their destination.
// Literal template text is never escaped, so `<{{ url }}|open>` links work.
type escaper int

const (
	escRaw   escaper = iota // http query/headers, json values, alo content
	escSlack                // Slack mrkdwn text: & < > become entities
	escURL                  // URL: path segments path-escaped, query values query-escaped
)

// segment is literal text or one {{ expr }}.
type segment struct {
	lit  string
	prog *program
}

// tstring is a string with {{ }} segments.
type tstring struct {
	segs []segment
	esc  escaper
	// want is the kind of the destination field: a lone {{ }} keeps its
	// value's type unless the destination is a string.
	want reflect.Kind
	// line and field place the string in the file, for load errors.
	line  int
	field string
	// fast reads a key that is one path natively (keys only), or nil.
	fast fastValue
}

// single reports whether the string is exactly one {{ }}.
func (t *tstring) single() bool { return len(t.segs) == 1 && t.segs[0].prog != nil }

func (t *tstring) render(m *machine) (any, error) {
	if t.single() {
		v, err := m.run(t.segs[0].prog)
		if err != nil {
			return nil, fmt.Errorf("{{ %s }}: %w", strings.TrimSpace(t.segs[0].prog.src), err)
		}
		if s, ok := v.(string); ok {
			return t.escape(s, false), nil
		}
		if t.want == reflect.String {
			return t.escape(stringify(v), false), nil
		}
		return plain(v), nil
	}
	var b strings.Builder
	inQuery := false
	for _, s := range t.segs {
		if s.prog == nil {
			b.WriteString(s.lit)
			if t.esc == escURL && strings.ContainsAny(s.lit, "?#") {
				inQuery = true
			}
			continue
		}
		v, err := m.run(s.prog)
		if err != nil {
			return nil, fmt.Errorf("{{ %s }}: %w", strings.TrimSpace(s.prog.src), err)
		}
		b.WriteString(t.escape(stringify(v), inQuery))
	}
	return b.String(), nil
}

func (t *tstring) placeholder() any {
	if len(t.segs) == 0 {
		return ""
	}
	if len(t.segs) == 1 && t.segs[0].prog == nil {
		return t.segs[0].lit
	}
	switch t.want {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return 0
	case reflect.Bool:
		return false
	case reflect.Slice, reflect.Map:
		return nil
	}
	var b strings.Builder
	for _, s := range t.segs {
		if s.prog == nil {
			b.WriteString(s.lit)
		} else {
			b.WriteString("x")
		}
	}
	return b.String()
}

func (t *tstring) escape(s string, inQuery bool) string {
	switch t.esc {
	case escSlack:
		return slackEscaper.Replace(s)
	case escURL:
		if inQuery {
			return url.QueryEscape(s)
		}
		return pathEscape(s)
	}
	return s
}

var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// pathEscape escapes a value inserted into a URL path so that it stays one
// segment: "/" is escaped, and a value of only dots is escaped too, so
// "../" cannot climb.
func pathEscape(s string) string {
	e := url.PathEscape(s)
	if strings.Trim(e, ".") == "" {
		e = strings.ReplaceAll(e, ".", "%2E")
	}
	return e
}

// stringify turns a value into text for a string destination.
func stringify(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case time.Duration:
		return x.String()
	case fmt.Stringer:
		return x.String()
	}
	b, err := json.Marshal(plain(v))
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// plain converts expression results into values json.Marshal renders
// faithfully (durations as text, times as RFC 3339).
func plain(v any) any {
	switch x := v.(type) {
	case time.Duration:
		return x.String()
	case time.Time:
		return x.Format(time.RFC3339Nano)
	}
	return v
}

// parseTemplate splits s into literal and {{ expr }} segments and compiles
// each expression. Literal text expands ${NAME} from the environment (each
// value is a secret, reported through secret). A "}}" inside an
// expression (a map literal) is handled by trying the next "}}" until the
// expression compiles.
func parseTemplate(s string, templates bool, expand func(string) (string, error)) ([]segment, error) {
	var segs []segment
	addLit := func(lit string) error {
		if lit == "" {
			return nil
		}
		x, err := expand(lit)
		if err != nil {
			return err
		}
		if n := len(segs); n > 0 && segs[n-1].prog == nil {
			segs[n-1].lit += x
		} else {
			segs = append(segs, segment{lit: x})
		}
		return nil
	}
	for {
		i := strings.Index(s, "{{")
		if i < 0 {
			if err := addLit(s); err != nil {
				return nil, err
			}
			return segs, nil
		}
		if err := addLit(s[:i]); err != nil {
			return nil, err
		}
		rest := s[i+2:]
		var firstErr error
		var prog *program
		end := -1
		for off := 0; ; {
			j := strings.Index(rest[off:], "}}")
			if j < 0 {
				break
			}
			src := rest[:off+j]
			if strings.TrimSpace(src) == "" {
				firstErr = errors.New("{{ }}: empty expression")
				end = off + j
				break
			}
			p, err := compile(src, templates, false)
			if err == nil {
				prog, end, firstErr = p, off+j, nil
				break
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("{{ %s }}: %w", strings.TrimSpace(src), err)
			}
			off += j + 2
		}
		switch {
		case prog != nil:
		case firstErr != nil:
			return nil, firstErr
		default:
			return nil, fmt.Errorf("unterminated {{ in %q", s)
		}
		segs = append(segs, segment{prog: prog})
		s = rest[end+2:]
	}
}
