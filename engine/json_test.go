package engine

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"unicode/utf8"
)

// stdDecode is the reference decodeJSON must agree with: encoding/json
// with UseNumber, numbers converted as the issue asks.
func stdDecode(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, io.ErrUnexpectedEOF
	}
	return convertNumbers(v), nil
}

func convertNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = convertNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = convertNumbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return int(i)
		}
		f, err := x.Float64()
		if err != nil {
			return x.String()
		}
		if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int(f)
		}
		return f
	}
	return v
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		in   string
		want any
	}{
		{`{"a":1,"b":-2,"c":2.5,"d":4.0,"e":1e3,"f":1.5e-3,"g":-0}`, map[string]any{"a": 1, "b": -2, "c": 2.5, "d": 4, "e": 1000, "f": 0.0015, "g": 0}},
		{`[true,false,null,"x"]`, []any{true, false, nil, "x"}},
		{`"\u00e9\ud83d\ude00\n\"\\\/"`, "é😀\n\"\\/"},
		{`"\ud800x"`, "\ufffdx"},
		{"\"\xff\"", "\ufffd"},
		{`9223372036854775807`, math.MaxInt64},
		{`12345678901234567890`, 12345678901234567890.0},
		{`1e400`, "1e400"},
		{` {} `, map[string]any{}},
		{`{"a":1,"a":2}`, map[string]any{"a": 2}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := decodeJSON([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
	for _, bad := range []string{``, `{`, `[1,]`, `{"a" 1}`, `01`, `1.`, `-`, `"\x"`, "\"a\nb\"", `tru`, `{} {}`, `"\ud800\uZZZZ"`, `1e`, `[`} {
		if _, err := decodeJSON([]byte(bad)); err == nil {
			t.Errorf("%q: got no error", bad)
		}
	}
}

func TestDecodeJSONDepth(t *testing.T) {
	deep := bytes.Repeat([]byte("["), maxJSONDepth+1)
	if _, err := decodeJSON(deep); err == nil {
		t.Error("got no error for nesting beyond the limit")
	}
}

// FuzzDecodeJSON holds decodeJSON to encoding/json: the same inputs are
// accepted and give the same values.
func FuzzDecodeJSON(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "events", "*.json"))
	for _, name := range files {
		b, _ := os.ReadFile(name)
		f.Add(b)
	}
	for _, s := range []string{`{"a":[1,2.5,"x",null,true]}`, `"\ud83d\ude00"`, `-0.0e+1`, `"\u0000"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeJSON(b)
		want, werr := stdDecode(b)
		if (err == nil) != (werr == nil) {
			if werr != nil && !utf8.Valid(b) {
				return // encoding/json rejects some invalid UTF-8 outside strings differently
			}
			t.Fatalf("%q: got error %v, encoding/json %v", b, err, werr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: got %#v, encoding/json %#v", b, got, want)
		}
	})
}
