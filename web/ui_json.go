package web

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// jsonNode is a payload decoded for display: keys in the order the sender
// wrote them (a Go map would sort them) and numbers as written. Every
// string in it is data from outside; templates escape it like any other
// text, never as trusted HTML.
type jsonNode struct {
	Key   string // the key in the parent object, or "[i]" in an array
	Path  string // the expr path that reads this value: event.action?.status
	Kind  string // object, array, string, number, bool or null
	Value string // scalars: the JSON text of the value
	Kids  []*jsonNode
	Open  bool // shown expanded
}

// Summary describes a container when it is folded.
func (n *jsonNode) Summary() string {
	switch n.Kind {
	case "object":
		return fmt.Sprintf("{%d}", len(n.Kids))
	case "array":
		return fmt.Sprintf("[%d]", len(n.Kids))
	}
	return ""
}

// Limits that keep a hostile payload from making a huge page; past them
// the page shows the raw JSON only.
const (
	maxTreeDepth = 32
	maxTreeNodes = 5000
)

var errTooBig = errors.New("payload too large or deep to show as a tree")

// parseTree decodes a JSON document into a display tree.
func parseTree(raw []byte) (*jsonNode, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	count := 0
	root, err := decodeNode(dec, "event", "event", 0, &count)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return root, nil
}

func decodeNode(dec *json.Decoder, key, path string, depth int, count *int) (*jsonNode, error) {
	*count++
	if *count > maxTreeNodes || depth > maxTreeDepth {
		return nil, errTooBig
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	n := &jsonNode{Key: key, Path: path, Open: depth < 3}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n.Kind = "object"
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				kid, err := decodeNode(dec, k, childPath(path, depth, k), depth+1, count)
				if err != nil {
					return nil, err
				}
				n.Kids = append(n.Kids, kid)
			}
		case '[':
			n.Kind = "array"
			for i := 0; dec.More(); i++ {
				kid, err := decodeNode(dec, "["+strconv.Itoa(i)+"]", indexPath(path, depth, i), depth+1, count)
				if err != nil {
					return nil, err
				}
				n.Kids = append(n.Kids, kid)
			}
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
	case string:
		n.Kind, n.Value = "string", strconv.Quote(t)
	case json.Number:
		n.Kind, n.Value = "number", t.String()
	case bool:
		n.Kind, n.Value = "bool", strconv.FormatBool(t)
	case nil:
		n.Kind, n.Value = "null", "null"
	}
	return n, nil
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// childPath writes the path to key the way a rule's condition reads it:
// the payload's top level is always there (event.type), anything deeper
// may be missing, so it is reached with ?. (event.action?.status). Keys
// that are not identifiers use the index form: event.action?.["my-key"].
func childPath(parent string, depth int, key string) string {
	if identRE.MatchString(key) {
		if depth == 0 {
			return parent + "." + key
		}
		return parent + "?." + key
	}
	q := strconv.Quote(key)
	if depth == 0 {
		return parent + "[" + q + "]"
	}
	return parent + "?.[" + q + "]"
}

func indexPath(parent string, depth int, i int) string {
	if depth == 0 {
		return parent + "[" + strconv.Itoa(i) + "]"
	}
	return parent + "?.[" + strconv.Itoa(i) + "]"
}

// fieldStat is one path seen across a sample of events.
type fieldStat struct {
	Path     string
	Count    int // events that have it
	Kinds    []string
	Examples []string
	anc      []string // paths from the top-level field down to this one
}

const (
	maxFieldPaths    = 1000
	maxFieldExamples = 3
	maxExampleLen    = 80
)

// fieldCollector counts paths over many payloads.
type fieldCollector struct {
	byPath map[string]*fieldStat
	order  []*fieldStat
}

func newFieldCollector() *fieldCollector {
	return &fieldCollector{byPath: map[string]*fieldStat{}}
}

// add walks one payload. Arrays are walked through their first element
// only: it shows what items hold without a row per index.
func (fc *fieldCollector) add(raw []byte) {
	root, err := parseTree(raw)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	var walk func(n *jsonNode, anc []string)
	walk = func(n *jsonNode, anc []string) {
		if n != root && !seen[n.Path] {
			seen[n.Path] = true
			fc.note(n, anc)
		}
		for i, k := range n.Kids {
			if n.Kind == "array" && i > 0 {
				break
			}
			walk(k, append(anc[:len(anc):len(anc)], k.Path))
		}
	}
	walk(root, nil)
}

func (fc *fieldCollector) note(n *jsonNode, anc []string) {
	st := fc.byPath[n.Path]
	if st == nil {
		if len(fc.order) >= maxFieldPaths {
			return
		}
		st = &fieldStat{Path: n.Path, anc: anc}
		fc.byPath[n.Path] = st
		fc.order = append(fc.order, st)
	}
	st.Count++
	if !slices.Contains(st.Kinds, n.Kind) {
		st.Kinds = append(st.Kinds, n.Kind)
	}
	if n.Kind == "object" || n.Kind == "array" {
		return
	}
	ex := clip(n.Value, maxExampleLen)
	if len(st.Examples) < maxFieldExamples && !slices.Contains(st.Examples, ex) {
		st.Examples = append(st.Examples, ex)
	}
}

// fields returns the paths as a tree would list them: each parent
// followed by its children, siblings in the order first seen, so that a
// field that only some events have still appears under its parent.
func (fc *fieldCollector) fields() []*fieldStat {
	rank := make(map[string]int, len(fc.order))
	for i, st := range fc.order {
		rank[st.Path] = i
	}
	rankOf := func(p string) int {
		if r, ok := rank[p]; ok {
			return r
		}
		return len(rank)
	}
	out := slices.Clone(fc.order)
	slices.SortStableFunc(out, func(a, b *fieldStat) int {
		for i := 0; i < len(a.anc) && i < len(b.anc); i++ {
			if a.anc[i] != b.anc[i] {
				return cmp.Compare(rankOf(a.anc[i]), rankOf(b.anc[i]))
			}
		}
		return cmp.Compare(len(a.anc), len(b.anc))
	})
	return out
}

// indentJSON pretty-prints raw JSON, or returns it as is.
func indentJSON(raw []byte) string {
	var buf bytes.Buffer
	if json.Indent(&buf, raw, "", "  ") != nil {
		return string(raw)
	}
	return strings.TrimSpace(buf.String())
}
