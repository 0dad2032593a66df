package web

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	"gopkg.in/yaml.v3"

	"alorules"
	"alorules/engine"
	"alorules/store"
)

// The playground tries a condition or candidate rules against stored
// events through Admin.TestRules: nothing is stored or sent. A bare
// condition is wrapped into a one-rule file with no steps, which the
// engine accepts (a rule without "do" only records that it matched).

const (
	defaultPlaygroundN = 50
	maxPlaygroundN     = 200
	// playgroundRule names the rule a bare condition is wrapped in.
	playgroundRule = "playground"
)

type playgroundData struct {
	Mode    string // "if" or "rules": which form ran
	If      string
	Rules   string
	Type    string
	N       int
	EventID string
	Types   []string

	Ran      bool
	NoEvents bool
	Issues   []issueView
	Warnings []issueView
	Hash     string
	Rows     []playgroundRow
	Summary  []ruleSummary
	Tested   int

	// Sequence is the sequence form's events and clock moves; Seq its
	// result.
	Sequence string
	Seq      *sequenceData
}

type playgroundRow struct {
	Event   *alorules.Event
	Results []engine.TestRule
	Matched bool
}

type ruleSummary struct {
	Rule             string
	Matched, Errored int
}

// playgroundPage is GET /playground (condition in ?if=, so a link to a
// result can be shared) and POST /playground (candidate rules, which may
// be too long for a URL).
func (a *Admin) playgroundPage(c echo.Context) error {
	d := playgroundData{Mode: "if", N: defaultPlaygroundN, Types: eventTypes,
		If: c.FormValue("if"), Rules: c.FormValue("rules"), Type: c.FormValue("type"),
		EventID: strings.TrimSpace(c.FormValue("event"))}
	if v := c.FormValue("n"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPlaygroundN {
			return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("n: want a whole number from 1 to %d", maxPlaygroundN))
		}
		d.N = n
	}
	if c.Request().Method == http.MethodPost {
		d.Mode = c.FormValue("mode")
	}
	d.Sequence = c.FormValue("sequence")
	if d.Sequence == "" {
		d.Sequence = defaultSequence
	}
	if d.Mode == "sequence" && c.Request().Method == http.MethodPost {
		if err := a.runSequence(c, &d); err != nil {
			return err
		}
		return a.render(c, http.StatusOK, "playground", "Playground", "playground", d)
	}
	if d.Rules == "" {
		d.Rules = a.exampleRule()
	}
	var ut userText
	switch {
	case d.Mode == "rules" && strings.TrimSpace(d.Rules) != "" && c.Request().Method == http.MethodPost:
		ut = a.candidateFile(d.Rules)
	case d.Mode == "if" && strings.TrimSpace(d.If) != "":
		var first int
		ut.file, first = conditionFile(d.If)
		ut.lineOf = func(l int) int { return l - first }
		ut.indent = conditionIndent
		ut.lines = strings.Split(strings.TrimSpace(d.If), "\n")
	default:
		return a.render(c, http.StatusOK, "playground", "Playground", "playground", d)
	}
	if err := a.runPlayground(c, &d, ut); err != nil {
		return err
	}
	return a.render(c, http.StatusOK, "playground", "Playground", "playground", d)
}

func (a *Admin) runPlayground(c echo.Context, d *playgroundData, ut userText) error {
	ctx := c.Request().Context()
	d.Ran = true
	var evs []*alorules.Event
	if d.EventID != "" {
		ev, err := a.Store.Event(ctx, d.EventID)
		if err != nil {
			return err
		}
		evs = []*alorules.Event{ev}
	} else {
		list, _, err := a.Store.Events(ctx, store.EventFilter{Type: storedType(d.Type), Limit: d.N})
		if err != nil {
			return err
		}
		for _, ev := range list {
			if !ev.Handshake {
				evs = append(evs, ev)
			}
		}
	}
	byID := make(map[string]*alorules.Event, len(evs))
	req := RulesTestRequest{Rules: ut.file}
	for _, ev := range evs {
		byID[ev.ID] = ev
		req.EventIDs = append(req.EventIDs, ev.ID)
	}
	if len(evs) == 0 {
		// TestRules wants events; still show what is wrong with the rules.
		d.NoEvents = true
		req.Event = []byte(`{"type":"action_created"}`)
	}
	res, err := a.TestRules(ctx, req)
	if err != nil {
		return err
	}
	d.Issues = placeIssues(res.Issues, ut)
	d.Warnings = placeIssues(res.Warnings, ut)
	d.Hash = res.Hash
	if len(res.Issues) > 0 || d.NoEvents {
		return nil
	}
	sums := map[string]*ruleSummary{}
	var order []string // rules in file order, as first seen
	for _, tr := range res.Results {
		row := playgroundRow{Event: byID[tr.EventID], Results: tr.Results}
		if row.Event == nil {
			continue
		}
		for _, r := range tr.Results {
			s := sums[r.Rule]
			if s == nil {
				s = &ruleSummary{Rule: r.Rule}
				sums[r.Rule] = s
				order = append(order, r.Rule)
			}
			switch r.Outcome {
			case alorules.OutcomeMatched:
				s.Matched++
				row.Matched = true
			case alorules.OutcomeError:
				s.Errored++
			}
		}
		d.Rows = append(d.Rows, row)
	}
	for _, name := range order {
		d.Summary = append(d.Summary, *sums[name])
	}
	d.Tested = len(d.Rows)
	return nil
}

// conditionIndent is how far conditionFile indents the condition's lines.
const conditionIndent = 6

// conditionFile wraps a bare condition into a rules file with one rule
// and no steps. The condition goes in a block scalar, so that quotes in it
// need no escaping and its lines map one to one: line i of the condition
// is line first+i of the file.
func conditionFile(cond string) (src string, first int) {
	var b strings.Builder
	b.WriteString("version: 1\nrules:\n  - name: " + playgroundRule + "\n    if: |-\n")
	first = 4
	for _, l := range strings.Split(strings.TrimSpace(cond), "\n") {
		b.WriteString(strings.Repeat(" ", conditionIndent))
		b.WriteString(strings.TrimRight(l, "\r"))
		b.WriteString("\n")
	}
	return b.String(), first
}

// candidateFile turns what was pasted into a rules file. A whole file
// (with a top-level "rules:") is used as is. One rule, or a list of rules,
// is placed under "rules:" and tested with the loaded file's version,
// connections and defaults, so that its steps render as they would in
// production. The result maps the file's lines and columns back to the
// pasted ones.
func (a *Admin) candidateFile(text string) userText {
	as := userText{file: text, lineOf: func(l int) int { return l }, lines: strings.Split(text, "\n")}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil || len(doc.Content) == 0 {
		return as // let the engine report the YAML error in place
	}
	root := doc.Content[0]
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	var b strings.Builder
	b.WriteString("rules:\n")
	indent := 0
	switch root.Kind {
	case yaml.MappingNode:
		if mapValue(root, "rules") != nil {
			return as
		}
		// One rule: "  - " before its first line, its other lines
		// indented to match.
		indent = 4
		for i, l := range lines {
			if i == 0 {
				b.WriteString("  - " + l + "\n")
			} else {
				b.WriteString("    " + l + "\n")
			}
		}
	case yaml.SequenceNode:
		indent = 2
		for _, l := range lines {
			b.WriteString("  " + l + "\n")
		}
	default:
		return as
	}
	b.WriteString(a.loadedPreamble())
	n := len(lines)
	return userText{file: b.String(), indent: indent, lines: as.lines, lineOf: func(l int) int {
		if l-1 > n {
			return 0
		}
		return l - 1
	}}
}

// loadedPreamble is every top-level section of the loaded rules file but
// its rules, as YAML ("version: 1" if nothing is loaded).
func (a *Admin) loadedPreamble() string {
	fallback := "version: 1\n"
	rs := a.Rules.Current()
	if rs == nil {
		return fallback
	}
	var doc yaml.Node
	if yaml.Unmarshal(rs.Source(), &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return fallback
	}
	root := doc.Content[0]
	keep := &yaml.Node{Kind: yaml.MappingNode}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "rules" {
			keep.Content = append(keep.Content, root.Content[i], root.Content[i+1])
		}
	}
	out, err := yaml.Marshal(keep)
	if err != nil || len(keep.Content) == 0 {
		return fallback
	}
	return string(out)
}

// exampleRule prefills the candidate rules box with the first loaded rule,
// its lines cut from the file as written (comments and layout kept), else
// a skeleton.
func (a *Admin) exampleRule() string {
	const skeleton = "name: try-me\non: [action_created]\nif: event.action?.priority == \"Urgent\"\n"
	rs := a.Rules.Current()
	if rs == nil {
		return skeleton
	}
	src := rs.Source()
	var doc yaml.Node
	if yaml.Unmarshal(src, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return skeleton
	}
	root := doc.Content[0]
	lines := strings.Split(string(src), "\n")
	for i := 0; i+1 < len(root.Content); i += 2 {
		seq := root.Content[i+1]
		if root.Content[i].Value != "rules" || seq.Kind != yaml.SequenceNode || len(seq.Content) == 0 {
			continue
		}
		rule := seq.Content[0]
		end := len(lines) // the line after the rule, 1-based
		if len(seq.Content) > 1 {
			end = seq.Content[1].Line
		} else if i+2 < len(root.Content) {
			end = root.Content[i+2].Line
		}
		col := rule.Column - 1
		var out []string
		for n := rule.Line; n < end && n <= len(lines); n++ {
			l := strings.TrimRight(lines[n-1], "\r")
			switch {
			case n == rule.Line && len(l) >= col:
				l = l[col:] // drop the "- " that starts the item
			case len(l)-len(strings.TrimLeft(l, " ")) >= col:
				l = l[col:]
			default:
				l = strings.TrimLeft(l, " ")
			}
			out = append(out, l)
		}
		// Comments and blank lines before the next rule belong to it.
		for len(out) > 0 {
			last := strings.TrimSpace(out[len(out)-1])
			if last != "" && !strings.HasPrefix(last, "#") {
				break
			}
			out = out[:len(out)-1]
		}
		if len(out) == 0 {
			return skeleton
		}
		return strings.Join(out, "\n") + "\n"
	}
	return skeleton
}
