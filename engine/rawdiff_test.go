package engine

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sameDiff checks diffRaw against decodePayload and diffPaths: an error
// exactly when prev does not decode, else the same paths.
func sameDiff(t *testing.T, prev, cur []byte) {
	t.Helper()
	cv, err := decodePayload(cur)
	if err != nil {
		return // diffRaw is only asked about payloads that decode
	}
	got, gotMore, err := diffRaw(prev, cur)
	pv, perr := decodePayload(prev)
	if (err != nil) != (perr != nil) {
		t.Fatalf("prev %q, cur %q: got error %v, decodePayload %v", prev, cur, err, perr)
	}
	if perr != nil {
		return
	}
	want, wantMore := diffPaths(pv, cv)
	if !slices.Equal(got, want) || gotMore != wantMore {
		t.Fatalf("prev %q, cur %q: got %q (+%d), want %q (+%d)", prev, cur, got, gotMore, want, wantMore)
	}
}

func TestDiffRaw(t *testing.T) {
	large, err := os.ReadFile(filepath.Join("testdata", "events", "large.json"))
	if err != nil {
		t.Fatal(err)
	}
	doing := strings.Replace(string(large), `"status": "Open"`, `"status": "Doing"`, 1)
	tests := []struct {
		name, prev, cur string
		want            []string // nil: only compared with diffPaths
	}{
		{"same text", `{"a":1}`, `{"a":1}`, nil},
		{"same but spacing", "{\"a\": [1, 2]}", `{"a":[1,2]}`, nil},
		{"leaf", `{"action":{"status":"Open","id":"a1"}}`, `{"action":{"status":"Done","id":"a1"}}`, []string{"action.status"}},
		{"large sample", string(large), doing, []string{"action.status"}},
		{"same number written two ways", `{"n":1,"f":2.50}`, `{"n":1.0,"f":2.5e0}`, nil},
		{"same string written two ways", `{"s":"A\/"}`, `{"s":"\u0041/"}`, nil},
		{"escaped key", `{"a\u0062":1}`, `{"ab":2}`, []string{"ab"}},
		{"escaped key both", `{"a\u0062":{"x":1}}`, `{"a\u0062":{"x":2}}`, []string{"ab.x"}},
		{"non-ASCII key", `{"é":1}`, `{"é":2}`, []string{"é"}},
		{"keys reordered", `{"a":1,"b":2}`, `{"b":2,"a":1}`, nil},
		{"keys reordered and changed", `{"a":1,"b":2}`, `{"b":3,"a":1}`, []string{"b"}},
		{"key added", `{"a":1}`, `{"a":1,"b":{"c":[1]}}`, []string{"b.c.0"}},
		{"key removed", `{"a":1,"b":2}`, `{"a":1}`, []string{"b"}},
		{"repeated key, first differs", `{"a":1,"a":2}`, `{"a":3,"a":2}`, nil},
		{"repeated key, last differs", `{"a":1,"a":2}`, `{"a":1,"a":3}`, []string{"a"}},
		{"kind change", `{"a":{"b":1}}`, `{"a":"gone"}`, []string{"a"}},
		{"object to array", `{"a":{}}`, `{"a":[]}`, []string{"a"}},
		{"array grew", `{"l":[1,{"x":2}]}`, `{"l":[1,{"x":2},{"y":[3]}]}`, []string{"l.2.y.0"}},
		{"array shrank", `{"l":[1,2,3]}`, `{"l":[1]}`, []string{"l.1", "l.2"}},
		{"array emptied", `{"l":[1]}`, `{"l":[]}`, []string{"l.0"}},
		{"emptied object", `{"a":{"b":1}}`, `{"a":{}}`, []string{"a.b"}},
		{"new empty object", `{}`, `{"a":{}}`, []string{"a"}},
		{"blank previous", ``, `{"a":1}`, []string{"a"}},
		{"scalar payloads", `1`, `2`, []string{""}},
		{"previous does not decode", `{"a":1,}`, `{"a":1}`, nil},
		{"previous has data after it", `{"a":1} x`, `{"a":1}`, nil},
		{"previous has a control character", "{\"a\":\"x\ty\"}", `{"a":"x"}`, nil},
		{"previous has a bad escape", `{"a":"\x"}`, `{"a":"x"}`, nil},
		{"previous has a bad number", `{"a":01}`, `{"a":1}`, nil},
		{"previous is cut short", `{"a":{"b":1}`, `{"a":{"b":2}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sameDiff(t, []byte(tt.prev), []byte(tt.cur))
			if tt.want != nil {
				got, _, err := diffRaw([]byte(tt.prev), []byte(tt.cur))
				if err != nil || !slices.Equal(got, tt.want) {
					t.Errorf("got %q, %v, want %q", got, err, tt.want)
				}
			}
		})
	}
}

func TestDiffRawDepth(t *testing.T) {
	deep := strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1)
	if _, _, err := diffRaw([]byte(deep), []byte(`[]`)); err == nil {
		t.Error("got no error for nesting beyond the limit")
	}
	ok := strings.Repeat("[", maxJSONDepth) + "1" + strings.Repeat("]", maxJSONDepth)
	sameDiff(t, []byte(ok), []byte(strings.Replace(ok, "1", "2", 1)))
}

// FuzzDiffRaw holds diffRaw to decodePayload and diffPaths. The current
// payload is the previous one with a piece cut out and another put in, so
// that most inputs are two payloads that differ a little, as in service.
func FuzzDiffRaw(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "events", "*.json"))
	for _, name := range files {
		b, _ := os.ReadFile(name)
		f.Add(b, uint16(len(b)/3), uint8(4), []byte(`"x"`))
	}
	for _, s := range []string{`{"a":[1,2.5,"x",null,true],"b":{"c":{}}}`, `{"a":1,"a":2}`, `{"\u0061":"\ud83d\ude00"}`, `[[],{}]`} {
		f.Add([]byte(s), uint16(3), uint8(1), []byte(`1`))
	}
	f.Fuzz(func(t *testing.T, prev []byte, at uint16, cut uint8, put []byte) {
		i := min(int(at), len(prev))
		j := min(i+int(cut), len(prev))
		cur := slices.Concat(prev[:i], put, prev[j:])
		sameDiff(t, prev, cur)
		sameDiff(t, cur, prev)
	})
}
