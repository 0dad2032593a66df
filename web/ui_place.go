package web

import (
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"alorules/engine"
)

// The engine reports an expression's compile error by the file line and a
// column counted inside the expression ("... (column 20)"). The playground
// shows the user's own line, so that column has to be moved to where the
// expression sits on that line: after "if: ", past a quote, or under a
// block scalar's indentation.

// userText is what the user typed and how the file the engine saw was
// made from it.
type userText struct {
	file   string        // the rules file the engine compiled
	lineOf func(int) int // a line of file to the user's line, 0 if not theirs
	// indent is how many columns the file adds before each of the user's
	// lines (the "  - " that makes a pasted rule a list item).
	indent int
	lines  []string // the user's lines
}

// issueView is an engine issue placed in what the user typed.
type issueView struct {
	engine.Issue
	// Line is the line in the user's text (0: outside it, in the loaded
	// file's connections or defaults that candidate rules are tested with).
	Line int
	// Column is on the user's line; ExprColumn is the engine's column
	// inside the expression, shown only when it could not be placed on the
	// line (a folded scalar, a template inside a string).
	Column, ExprColumn int
	Snippet            string // the user's line
	Caret              string // blanks and a ^ under Column
}

var columnRE = regexp.MustCompile(` ?\(column (\d+)\)`)

// placeIssues maps issues from the file the engine saw back to the lines
// the user typed, and a condition's column onto the line, with a caret.
func placeIssues(list []engine.Issue, ut userText) []issueView {
	var root *yaml.Node
	var fileLines []string
	var out []issueView
	for _, is := range list {
		v := issueView{Issue: is}
		m := columnRE.FindStringSubmatchIndex(is.Msg)
		if m != nil {
			v.ExprColumn, _ = strconv.Atoi(is.Msg[m[2]:m[3]])
			// The column is shown apart; left in, it would contradict it.
			v.Msg = is.Msg[:m[0]] + is.Msg[m[1]:]
		}
		line := is.Line
		if v.ExprColumn > 0 && (is.Field == "if" || is.Field == "unless") {
			if root == nil {
				root = parseFile(ut.file)
				fileLines = strings.Split(ut.file, "\n")
			}
			if n := conditionNode(root, is.Rule, is.Field); n != nil {
				if l, c, ok := exprPosition(n, fileLines, is.Line, v.ExprColumn); ok && c > ut.indent {
					line, v.Column = l, c-ut.indent
				}
			}
		}
		if line > 0 {
			if l := ut.lineOf(line); l >= 1 && l <= len(ut.lines) {
				v.Line = l
				v.Snippet = strings.TrimRight(ut.lines[l-1], "\r")
			}
		}
		if v.Line == 0 {
			// Not on the user's lines: the message keeps its own column.
			v.Msg, v.Column, v.ExprColumn = is.Msg, 0, 0
		}
		if v.Column > utf8.RuneCountInString(v.Snippet)+1 {
			v.Column = 0
		}
		if v.Column > 0 {
			v.ExprColumn = 0
			v.Caret = caret(v.Snippet, v.Column)
		}
		out = append(out, v)
	}
	return out
}

// caret is a line with a ^ under column col of line; tabs before it are
// kept so that it lines up however wide the browser draws them.
func caret(line string, col int) string {
	var b strings.Builder
	n := 1
	for _, r := range line {
		if n == col {
			break
		}
		if r == '\t' {
			b.WriteRune('\t')
		} else {
			b.WriteByte(' ')
		}
		n++
	}
	for ; n < col; n++ {
		b.WriteByte(' ')
	}
	b.WriteByte('^')
	return b.String()
}

func parseFile(src string) *yaml.Node {
	var doc yaml.Node
	if yaml.Unmarshal([]byte(src), &doc) != nil || len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

// mapValue is the value of key in mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// conditionNode finds the scalar of field (if or unless) of the rule
// called rule in the parsed rules file root.
func conditionNode(root *yaml.Node, rule, field string) *yaml.Node {
	rules := mapValue(root, "rules")
	if rules == nil || rules.Kind != yaml.SequenceNode || rule == "" {
		return nil
	}
	for _, r := range rules.Content {
		if name := mapValue(r, "name"); name != nil && name.Value == rule {
			if n := mapValue(r, field); n != nil && n.Kind == yaml.ScalarNode {
				return n
			}
			return nil
		}
	}
	return nil
}

// exprPosition places column col of the expression held by scalar n, on
// the line issueLine of the file (lines), as a line and column of the
// file. It knows single-line plain and quoted scalars and literal blocks;
// ok is false for anything else (folded text, a plain scalar over several
// lines), whose columns do not match the source.
func exprPosition(n *yaml.Node, lines []string, issueLine, col int) (line, column int, ok bool) {
	if n.Line < 1 || n.Line > len(lines) {
		return 0, 0, false
	}
	switch n.Style &^ yaml.TaggedStyle {
	case 0:
		src := []rune(strings.TrimRight(lines[n.Line-1], "\r"))
		start := n.Column - 1
		// A plain scalar that goes on to the next line is folded into one
		// line of value: columns past the first line would be wrong.
		if issueLine != n.Line || start < 0 || start > len(src) || !strings.HasPrefix(string(src[start:]), n.Value) {
			return 0, 0, false
		}
		return n.Line, n.Column + col - 1, true
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		if issueLine != n.Line {
			return 0, 0, false
		}
		c, ok := quotedColumn([]rune(lines[n.Line-1]), n.Column, n.Style == yaml.DoubleQuotedStyle, col)
		return n.Line, c, ok
	case yaml.LiteralStyle:
		// The engine counts a block's lines from the one after "|".
		exprLine := issueLine - n.Line
		if exprLine < 1 || n.Line+exprLine > len(lines) {
			return 0, 0, false
		}
		header := strings.TrimSpace(string([]rune(lines[n.Line-1])[min(n.Column, utf8.RuneCountInString(lines[n.Line-1])):]))
		if strings.ContainsAny(header, "123456789") {
			return 0, 0, false // an explicit indentation: rare, not worth the code
		}
		indent := -1
		for _, l := range lines[n.Line:] {
			if t := strings.TrimLeft(l, " "); strings.TrimSpace(t) != "" {
				indent = len(l) - len(t)
				break
			}
		}
		if indent < 0 {
			return 0, 0, false
		}
		return n.Line + exprLine, indent + col, true
	}
	return 0, 0, false
}

// quotedColumn walks a quoted scalar that starts (with its quote) at
// column start of line and returns the column where the col-th character
// of its value is written, counting an escape (a backslash sequence, or
// two single quotes) as the one character it stands for.
func quotedColumn(line []rune, start int, double bool, col int) (int, bool) {
	i := start // index of the first rune after the opening quote
	for n := 1; i < len(line); n++ {
		if n == col {
			return i + 1, true
		}
		switch {
		case double && line[i] == '"', !double && line[i] == '\'' && (i+1 >= len(line) || line[i+1] != '\''):
			return 0, false // the closing quote: the column is past the value
		case !double && line[i] == '\'':
			i += 2
		case double && line[i] == '\\':
			if i+1 >= len(line) {
				return 0, false // a line break escaped: the value goes on
			}
			switch line[i+1] {
			case 'x':
				i += 4
			case 'u':
				i += 6
			case 'U':
				i += 10
			default:
				i += 2
			}
		default:
			i++
		}
	}
	return 0, false
}
