package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/expr-lang/expr"
)

// dedupeKeyFunc compiles --dedupe-key, an expr expression over `event` (the
// payload) whose value names a delivery: bodies with the same key within
// the dedupe window are one event, even when ALO re-sends it with a new
// timestamp inside the body. It is compiled once, at start.
func dedupeKeyFunc(src string) (func(body []byte) (string, error), error) {
	env := map[string]any{"event": map[string]any{}}
	prog, err := expr.Compile(src, expr.Env(env), expr.MaxNodes(500))
	if err != nil {
		return nil, fmt.Errorf("--dedupe-key: %w", err)
	}
	return func(body []byte) (string, error) {
		var payload any
		if err := json.Unmarshal(body, &payload); err != nil {
			return "", err
		}
		out, err := expr.Run(prog, map[string]any{"event": payload})
		if err != nil {
			return "", err
		}
		switch v := out.(type) {
		case nil:
			return "", errors.New("dedupe key is nil")
		case string:
			return v, nil
		default:
			return fmt.Sprint(v), nil
		}
	}, nil
}
