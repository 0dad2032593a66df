package engine

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Issue is one problem found in a rules file: an error that stops the file
// from loading, or a warning that does not. It prints the way compilers do,
// so editors and CI logs can jump to it:
//
//	rules.yaml:14: rule "page-oncall": if: unknown name "evnt" (column 1)
type Issue struct {
	File  string `json:"file"`
	Line  int    `json:"line,omitempty"`
	Rule  string `json:"rule,omitempty"`
	Field string `json:"field,omitempty"`
	Msg   string `json:"message"`
}

// String formats the issue as file:line: rule "name": field: message,
// leaving out the parts that are unknown.
func (i Issue) String() string {
	var b strings.Builder
	b.WriteString(i.File)
	if i.Line > 0 {
		fmt.Fprintf(&b, ":%d", i.Line)
	}
	b.WriteString(": ")
	if i.Rule != "" {
		fmt.Fprintf(&b, "rule %q: ", i.Rule)
	}
	if i.Field != "" {
		b.WriteString(i.Field)
		b.WriteString(": ")
	}
	b.WriteString(i.Msg)
	return b.String()
}

// LoadError is every error found in a rules file, not only the first, so
// that one run of `alorules check` shows all there is to fix.
type LoadError struct {
	Issues []Issue `json:"issues"`
}

// Error implements error: one issue per line, in file order.
func (e *LoadError) Error() string {
	lines := make([]string, len(e.Issues))
	for i, is := range e.Issues {
		lines[i] = is.String()
	}
	return strings.Join(lines, "\n")
}

// issues collects errors and warnings while a file is parsed.
type issues struct {
	file     string
	errs     []Issue
	warnings []Issue
}

func (is *issues) errorf(line int, rule, field, format string, args ...any) {
	is.errs = append(is.errs, Issue{File: is.file, Line: line, Rule: rule, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (is *issues) warnf(line int, rule, field, format string, args ...any) {
	is.warnings = append(is.warnings, Issue{File: is.file, Line: line, Rule: rule, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// sortIssues orders issues by line; the stable sort keeps issues on the same
// line in the order they were found.
func sortIssues(list []Issue) {
	slices.SortStableFunc(list, func(a, b Issue) int { return cmp.Compare(a.Line, b.Line) })
}

// suggest returns the candidate closest to s within a small edit distance,
// or "", for "did you mean ...?" hints on misspelled keys and names.
func suggest(s string, candidates []string) string {
	best, bestDist := "", 3
	if len(s) <= 4 {
		bestDist = 2
	}
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, counting an
// adjacent swap as one edit (the most common typo).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
