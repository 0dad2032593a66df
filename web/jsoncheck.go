package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// maxDepth is the deepest nesting of objects and arrays a webhook body may
// have. Real payloads are shallow; deep ones are an attack on whatever
// walks them later.
const maxDepth = 64

// envelope is what ingress needs to know about a body before storing it.
type envelope struct {
	Type      string
	Challenge string
}

// checkBody makes sure body is one well-formed JSON object in UTF-8 with no
// duplicate keys, no nesting deeper than maxDepth, and a string "type". The
// error says what is wrong in words an ALO developer can act on.
func checkBody(body []byte) (envelope, error) {
	var env envelope
	if !utf8.Valid(body) {
		return env, errors.New("body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()

	// Each open container is a frame; objects remember their keys so a
	// duplicate can be caught, and whether the next token is a key.
	type frame struct {
		object    bool
		keys      map[string]struct{}
		expectKey bool
		key       string
	}
	var stack []*frame
	seenTop := false
	sawType := false

	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return env, fmt.Errorf("body is not valid JSON: %s", jsonErrText(err))
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top == nil && seenTop {
			return env, errors.New("body has data after the JSON object")
		}
		if top != nil && top.object && top.expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k := tok.(string) // the decoder only yields strings in key position
			if _, dup := top.keys[k]; dup {
				return env, fmt.Errorf("body has duplicate key %q", k)
			}
			top.keys[k] = struct{}{}
			top.key = k
			top.expectKey = false
			continue
		}
		// A value.
		isTopLevelField := len(stack) == 1 && top.object
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if top == nil && v == '[' {
					return env, errors.New("body must be a JSON object, got an array")
				}
				if len(stack) >= maxDepth {
					return env, fmt.Errorf("body is nested deeper than %d levels", maxDepth)
				}
				if isTopLevelField && top.key == "type" {
					return env, errors.New(`body field "type" must be a string`)
				}
				f := &frame{object: v == '{', expectKey: v == '{'}
				if f.object {
					f.keys = map[string]struct{}{}
				}
				stack = append(stack, f)
				seenTop = true
				if top != nil && top.object {
					top.expectKey = true
				}
				continue
			case ']', '}':
				stack = stack[:len(stack)-1]
				continue
			}
		case string:
			if isTopLevelField {
				switch top.key {
				case "type":
					env.Type, sawType = v, true
				case "challenge":
					env.Challenge = v
				}
			}
		default:
			if top == nil {
				return env, errors.New("body must be a JSON object")
			}
			if isTopLevelField && top.key == "type" {
				return env, errors.New(`body field "type" must be a string`)
			}
		}
		if top == nil {
			return env, errors.New("body must be a JSON object")
		}
		if top.object {
			top.expectKey = true
		}
	}
	switch {
	case !seenTop:
		return env, errors.New("body is empty; want a JSON object")
	case len(stack) > 0:
		return env, errors.New("body is not valid JSON: unexpected end")
	case !sawType:
		return env, errors.New(`body has no "type" field`)
	case env.Type == "":
		return env, errors.New(`body field "type" is empty`)
	}
	return env, nil
}

// jsonErrText keeps decoder errors short and free of Go type names.
func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end"
	}
	return err.Error()
}
