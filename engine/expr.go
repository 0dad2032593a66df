package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"alorules"
	"alorules/alo"
)

// Limits on expressions. Rules come from operators and payloads from ALO,
// but a typo or a hostile payload must not hang matching or exhaust memory:
// compile refuses what is obviously too big, the VM's memory budget and the
// iteration budget stop the rest at run time with an error outcome.
const (
	// maxExprLen bounds one expression's source, which also bounds how
	// deeply it can nest.
	maxExprLen = 8 << 10
	// maxNodes is expr's AST node limit per expression; real conditions
	// use a few dozen.
	maxNodes = 2000
	// memoryBudget is the VM's allocation budget per run (expr counts
	// range elements, repeated strings and collected arrays against it).
	memoryBudget = 1_000_000
	// maxRange is the longest constant range (a..b) accepted at compile.
	maxRange = 100_000
	// maxIterations bounds closure bodies (all, any, filter, map, ...) per
	// run: nested loops over a large payload array would otherwise run
	// for hours without allocating anything.
	maxIterations = 1_000_000
)

// tickName is the hidden function wrapped around every closure body to
// count iterations; no rule can name it by accident.
const tickName = "__alorules_tick"

// errIterations is raised inside the VM when an expression loops too much.
var errIterations = fmt.Errorf("iteration budget exceeded (%d closure calls)", maxIterations)

// budget counts closure iterations of one expression run.
type budget struct{ n int }

func (b *budget) tick(v any) any {
	b.n++
	if b.n > maxIterations {
		panic(errIterations)
	}
	return v
}

// envInput is everything an expression environment is built from.
type envInput struct {
	Event   *alorules.Event
	Payload any // the event's payload, decoded once per event
	Now     time.Time
	// Steps holds results of earlier steps (templates only): nil leaves
	// the name undeclared, so conditions cannot use it.
	Steps map[string]any
	// Vars are an execution's extra names (templates only).
	Vars   map[string]any
	budget *budget
}

// buildEnv is the one place the expression environment is built, both the
// declaration that expressions are compiled against and the values they
// run with, so the two cannot drift apart. Later issues add names here
// (previous, changed(), events).
func buildEnv(in envInput) map[string]any {
	var typ string
	var received time.Time
	if in.Event != nil {
		typ, received = alo.NormalizeType(in.Event.Type), in.Event.ReceivedAt
	}
	now := in.Now
	b := in.budget
	if b == nil {
		b = &budget{}
	}
	env := map[string]any{
		"event":       in.Payload,
		"type":        typ,
		"received_at": received,
		"now":         func() time.Time { return now },
		tickName:      b.tick,
	}
	if in.Steps != nil {
		env["steps"] = in.Steps
	}
	for k, v := range in.Vars {
		if _, taken := env[k]; !taken {
			env[k] = v
		}
	}
	return env
}

// Declarations to compile against: conditions see the event only,
// templates also see steps.
var (
	condDecl     = buildEnv(envInput{Payload: map[string]any{}})
	templateDecl = buildEnv(envInput{Payload: map[string]any{}, Steps: map[string]any{}})
)

// program is one compiled expression.
type program struct {
	src  string
	prog *vm.Program
	// stepRefs are the literal ids named as steps.<id> or steps["id"].
	stepRefs []string
	// usesSteps is set when the expression reads steps at all, so it
	// cannot be rendered before the execution runs.
	usesSteps bool
}

// exprError is a compile error with its position inside the expression.
type exprError struct {
	Line, Column int // 1-based, within the expression
	Msg          string
}

func (e *exprError) Error() string {
	return fmt.Sprintf("%s (column %d)", e.Msg, e.Column)
}

// compile compiles src once, at load. asBool is for conditions.
func compile(src string, templates, asBool bool) (*program, *exprError) {
	if len(src) > maxExprLen {
		return nil, &exprError{Line: 1, Column: 1, Msg: fmt.Sprintf("expression is %d bytes, the limit is %d", len(src), maxExprLen)}
	}
	decl := condDecl
	if templates {
		decl = templateDecl
	}
	opts := []expr.Option{
		expr.Env(decl),
		// The variable "type" shadows expr's type(); now() must use the
		// injected clock, not the wall clock.
		expr.DisableBuiltin("type"),
		expr.DisableBuiltin("now"),
		expr.MaxNodes(maxNodes),
		expr.Patch(tickPatcher{}),
	}
	if asBool {
		opts = append(opts, expr.AsBool())
	}
	p, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, toExprError(src, err)
	}
	out := &program{src: src, prog: p}
	var w inspector
	node := p.Node()
	ast.Walk(&node, &w)
	if w.bigRange != nil {
		l, c := position(src, w.bigRange.Location().From)
		return nil, &exprError{Line: l, Column: c, Msg: fmt.Sprintf("range of %d elements is too large (limit %d)", w.bigRangeLen, maxRange)}
	}
	out.stepRefs, out.usesSteps = w.stepRefs, w.usesSteps
	return out, nil
}

// toExprError keeps expr's message and turns its position into a column.
func toExprError(src string, err error) *exprError {
	var fe *file.Error
	if errors.As(err, &fe) {
		msg := fe.Message
		var name string
		if _, scanErr := fmt.Sscanf(msg, "unknown name %s", &name); scanErr == nil && msg == "unknown name "+name {
			msg = fmt.Sprintf("unknown name %q", name)
			if s := suggest(name, envNames()); s != "" {
				msg += fmt.Sprintf(", did you mean %q?", s)
			}
		}
		line, col := fe.Line, fe.Column+1
		if line == 0 {
			line, col = position(src, fe.From)
		}
		return &exprError{Line: line, Column: col, Msg: msg}
	}
	return &exprError{Line: 1, Column: 1, Msg: err.Error()}
}

func envNames() []string {
	names := make([]string, 0, len(templateDecl))
	for k := range templateDecl {
		if k != tickName {
			names = append(names, k)
		}
	}
	return names
}

// position turns a rune offset into a 1-based line and column.
func position(src string, from int) (line, col int) {
	line, col = 1, 1
	i := 0
	for _, r := range src {
		if i == from {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		i++
	}
	return line, col
}

// tickPatcher wraps every closure body in the iteration counter.
type tickPatcher struct{}

func (tickPatcher) Visit(node *ast.Node) {
	if p, ok := (*node).(*ast.PredicateNode); ok {
		call := &ast.CallNode{Callee: &ast.IdentifierNode{Value: tickName}, Arguments: []ast.Node{p.Node}}
		call.SetLocation(p.Node.Location())
		call.Callee.SetLocation(p.Node.Location())
		p.Node = call
	}
}

// inspector finds what compile checks after expr is done: huge constant
// ranges and references to steps.
type inspector struct {
	bigRange    ast.Node
	bigRangeLen int
	stepRefs    []string
	usesSteps   bool
}

func (w *inspector) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.BinaryNode:
		if n.Operator != ".." {
			return
		}
		a, ok1 := n.Left.(*ast.IntegerNode)
		b, ok2 := n.Right.(*ast.IntegerNode)
		if ok1 && ok2 && w.bigRange == nil && b.Value-a.Value+1 > maxRange {
			w.bigRange, w.bigRangeLen = n, b.Value-a.Value+1
		}
	case *ast.IdentifierNode:
		if n.Value == "steps" {
			w.usesSteps = true
		}
	case *ast.MemberNode:
		id, ok := n.Node.(*ast.IdentifierNode)
		if !ok || id.Value != "steps" {
			return
		}
		if s, ok := n.Property.(*ast.StringNode); ok {
			w.stepRefs = append(w.stepRefs, s.Value)
		}
	}
}

// machine runs compiled expressions for one event (or one execution): the
// environment is built once and reused by every rule, the VM comes from a
// pool so that workers do not allocate one per event.
type machine struct {
	vm     *vm.VM
	env    map[string]any
	budget budget
}

var vmPool = sync.Pool{New: func() any { return &vm.VM{MemoryBudget: memoryBudget} }}

func newMachine(in envInput) *machine {
	m := &machine{vm: vmPool.Get().(*vm.VM)}
	in.budget = &m.budget
	m.env = buildEnv(in)
	return m
}

// release returns the VM to the pool; the machine must not be used after.
func (m *machine) release() {
	if m.vm != nil {
		vmPool.Put(m.vm)
		m.vm = nil
	}
}

// run evaluates p. A panic inside the VM (nil access, budget exceeded)
// comes back as an error, never as a crash or a silent false.
func (m *machine) run(p *program) (any, error) {
	m.budget.n = 0
	out, err := m.vm.Run(p.prog, m.env)
	if err != nil {
		return nil, runError(err)
	}
	return out, nil
}

// runError shortens expr's run-time error to its message and column: the
// snippet it carries is multi-line and repeats the rule.
func runError(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		return fmt.Errorf("%s (column %d)", fe.Message, fe.Column+1)
	}
	return err
}

// decodePayload decodes JSON so that numbers compare with literals in
// expressions: integral numbers become int, others float64. Strings stay
// strings; nothing is ever parsed as a template.
func decodePayload(raw []byte) (any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode payload: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("decode payload: data after the JSON value")
	}
	return convertNumbers(v), nil
}

func convertNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = convertNumbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = convertNumbers(e)
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return int(i)
		}
		f, err := x.Float64()
		if err != nil {
			// Out of float64 range: keep the digits rather than lose them.
			return x.String()
		}
		if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int(f)
		}
		return f
	}
	return v
}
