package engine

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/vm"
	"github.com/expr-lang/expr/vm/runtime"

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

// Hidden functions the compiler patches into expressions; no rule names
// them by accident.
const (
	// tickName is wrapped around every closure body to count iterations.
	tickName = "__alorules_tick"
	// getName, getOptName and endChainName replace member access (a.b,
	// a?.b) with a fast path for JSON objects; see fetchPatcher.
	getName      = "__alorules_get"
	getOptName   = "__alorules_getopt"
	endChainName = "__alorules_endchain"
)

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
	// Previous is the last payload seen for the event's entity before
	// this event, decoded; nil if none.
	Previous any
	Now      time.Time
	// Steps holds results of earlier steps (templates only): nil leaves
	// the name undeclared, so conditions cannot use it.
	Steps map[string]any
	// Vars are an execution's extra names (templates only): state, events,
	// digest, timer, or any other name not taken.
	Vars   map[string]any
	budget *budget
	// chg, if set, is where changed() reads from (the machine's own, so
	// that a previous payload found later can be set).
	chg *changes
	// noState leaves previous, changed and state out of the values (never
	// the declaration): for matching with a rule set that reads none of
	// them, whose environment then stays within Go's small-map size.
	noState bool
}

// Names that only step templates see, filled from an execution's Vars:
// a digest's events and their summary, a fired timer. Declared with their
// types so that compile can check their use.
var templateVars = map[string]any{
	"events": []any(nil),
	"digest": map[string]any(nil),
	"timer":  map[string]any(nil),
}

// buildEnv is the one place the expression environment is built, both the
// declaration that expressions are compiled against and the values they
// run with, so the two cannot drift apart.
//
// Conditions see event, type, received_at, now(), previous, changed() and
// state (the entity's latest payload: the event's own, when matching).
// Templates also see steps, and events, digest and timer from Vars.
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
	prev := in.Previous
	if prev == nil {
		// Typed, so that the declaration gives previous a map type; a
		// nil map reads like nil (previous == nil, previous?.x).
		prev = map[string]any(nil)
	}
	chg := in.chg
	if chg == nil {
		chg = &changes{}
	}
	chg.cur, chg.prev = in.Payload, in.Previous
	state := in.Payload
	if v, ok := in.Vars["state"]; ok {
		state = v
	}
	env := map[string]any{
		"event":       in.Payload,
		"type":        typ,
		"received_at": received,
		"now":         func() time.Time { return now },
		tickName:      b.tick,
		getName:       fetch,
		getOptName:    fetchOptional,
		endChainName:  endChain,
	}
	if !in.noState {
		env["previous"], env["changed"], env["state"] = prev, chg.changed, state
	}
	if in.Steps != nil {
		env["steps"] = in.Steps
		for k, v := range templateVars {
			if x, ok := in.Vars[k]; ok {
				v = x
			}
			env[k] = v
		}
	}
	for k, v := range in.Vars {
		if _, taken := env[k]; !taken {
			env[k] = v
		}
	}
	return env
}

// Declarations to compile against: conditions see the event and its
// entity, templates also see steps and the deferred rules' names.
var (
	condDecl     = buildEnv(envInput{Payload: map[string]any{}, Previous: map[string]any{}})
	templateDecl = buildEnv(envInput{Payload: map[string]any{}, Previous: map[string]any{}, Steps: map[string]any{}})
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
	// names are the environment names it reads that depend on the kind
	// of rule (previous, changed, events, digest, timer).
	names []string
	// fast is the native evaluator of a simple condition, or nil.
	fast fastBool
}

// exprError is a compile error with its position inside the expression.
type exprError struct {
	Line, Column int // 1-based, within the expression
	Msg          string
}

// Error implements error, with the column for the rules file message.
func (e *exprError) Error() string {
	return fmt.Sprintf("%s (column %d)", e.Msg, e.Column)
}

// compile compiles src once, at load. asBool is for conditions.
// Compiled programs are immutable, so identical expressions share one,
// across rules and across reloads: a reload recompiles only what changed.
func compile(src string, templates, asBool bool) (*program, *exprError) {
	key := cacheKey{src: src, mode: mode(templates, asBool)}
	programCache.Lock()
	c, ok := programCache.m[key]
	programCache.Unlock()
	if !ok {
		cfg := configPools[key.mode].Get().(*conf.Config)
		c = compileConfig(src, cfg)
		configPools[key.mode].Put(cfg)
		programCache.Lock()
		if len(programCache.m) >= maxCachedPrograms {
			clear(programCache.m) // simple, and rare: rules do not change that often
		}
		programCache.m[key] = c
		programCache.Unlock()
	}
	if c.err != nil {
		return nil, c.err
	}
	return &program{src: src, prog: c.prog, stepRefs: c.stepRefs, usesSteps: c.usesSteps, names: c.names}, nil
}

// compileWith compiles without the cache; fastFetch false leaves out the
// fetch patch, for the differential test.
func compileWith(src string, templates, asBool, fastFetch bool) (*program, *exprError) {
	c := compileConfig(src, newConfig(templates, asBool, fastFetch))
	if c.err != nil {
		return nil, c.err
	}
	return &program{src: src, prog: c.prog, stepRefs: c.stepRefs, usesSteps: c.usesSteps, names: c.names}, nil
}

// maxCachedPrograms bounds the program cache.
const maxCachedPrograms = 50_000

type cacheKey struct {
	src  string
	mode int
}

// compiled is a cached compile result, error included.
type compiled struct {
	prog      *vm.Program
	stepRefs  []string
	usesSteps bool
	names     []string
	err       *exprError
}

var programCache = struct {
	sync.Mutex
	m map[cacheKey]*compiled
}{m: map[cacheKey]*compiled{}}

func mode(templates, asBool bool) int {
	m := 0
	if templates {
		m |= 1
	}
	if asBool {
		m |= 2
	}
	return m
}

// configPools hold expr configurations per mode. expr.Compile builds a
// new one for every expression (copying every builtin), which was a large
// share of load time; a configuration is reused by one compile at a time.
var configPools [4]sync.Pool

func init() {
	for m := range configPools {
		configPools[m].New = func() any { return newConfig(m&1 != 0, m&2 != 0, true) }
	}
}

// newConfig is the expr configuration, as expr.Compile would build it from
// these options.
func newConfig(templates, asBool, fastFetch bool) *conf.Config {
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
	if fastFetch {
		opts = append(opts, expr.Patch(fetchPatcher{}))
	}
	if asBool {
		opts = append(opts, expr.AsBool())
	}
	cfg := conf.CreateNew()
	for _, op := range opts {
		op(cfg)
	}
	for name := range cfg.Disabled {
		delete(cfg.Builtins, name)
	}
	cfg.Check()
	return cfg
}

// compileConfig is expr.Compile with a prepared configuration, plus the
// checks of what expr allows but the engine refuses.
func compileConfig(src string, cfg *conf.Config) *compiled {
	if len(src) > maxExprLen {
		return &compiled{err: &exprError{Line: 1, Column: 1, Msg: fmt.Sprintf("expression is %d bytes, the limit is %d", len(src), maxExprLen)}}
	}
	decl, _ := cfg.EnvObject.(map[string]any)
	tree, err := checker.ParseCheck(src, cfg)
	if err != nil {
		return &compiled{err: toExprError(src, err, decl)}
	}
	if cfg.Optimize {
		if err := optimizer.Optimize(&tree.Node, cfg); err != nil {
			var fe *file.Error
			if errors.As(err, &fe) {
				err = fe.Bind(tree.Source)
			}
			return &compiled{err: toExprError(src, err, decl)}
		}
	}
	p, err := compiler.Compile(tree, cfg)
	if err != nil {
		return &compiled{err: toExprError(src, err, decl)}
	}
	var w inspector
	node := p.Node()
	ast.Walk(&node, &w)
	if w.bigRange != nil {
		l, c := position(src, w.bigRange.Location().From)
		return &compiled{err: &exprError{Line: l, Column: c, Msg: fmt.Sprintf("range of %d elements is too large (limit %d)", w.bigRangeLen, maxRange)}}
	}
	return &compiled{prog: p, stepRefs: w.stepRefs, usesSteps: w.usesSteps, names: w.names}
}

// toExprError keeps expr's message and turns its position into a column.
func toExprError(src string, err error, decl map[string]any) *exprError {
	var fe *file.Error
	if errors.As(err, &fe) {
		msg := fe.Message
		var name string
		if _, scanErr := fmt.Sscanf(msg, "unknown name %s", &name); scanErr == nil && msg == "unknown name "+name {
			msg = fmt.Sprintf("unknown name %q", name)
			if s := suggest(name, envNames(decl)); s != "" {
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

func envNames(decl map[string]any) []string {
	names := make([]string, 0, len(decl))
	for k := range decl {
		if !strings.HasPrefix(k, "__alorules_") {
			names = append(names, k)
		}
	}
	slices.Sort(names) // suggestions must not depend on map order
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
	names       []string
}

// kindNames are the names whose use depends on the kind of rule.
var kindNames = []string{"previous", "changed", "state", "events", "digest", "timer"}

// Visit implements ast.Visitor.
func (w *inspector) Visit(node *ast.Node) {
	if id, ok := (*node).(*ast.IdentifierNode); ok && slices.Contains(kindNames, id.Value) && !slices.Contains(w.names, id.Value) {
		w.names = append(w.names, id.Value)
	}
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
	case *ast.MemberNode, *ast.CallNode:
		base, prop, ok := member(n)
		if !ok {
			return
		}
		id, ok := base.(*ast.IdentifierNode)
		if !ok || id.Value != "steps" {
			return
		}
		if s, ok := prop.(*ast.StringNode); ok {
			w.stepRefs = append(w.stepRefs, s.Value)
		}
	}
}

// member returns the object and property of a member access, before or
// after fetchPatcher.
func member(n ast.Node) (base, prop ast.Node, ok bool) {
	switch x := n.(type) {
	case *ast.MemberNode:
		return x.Node, x.Property, !x.Method
	case *ast.CallNode:
		if id, isIdent := x.Callee.(*ast.IdentifierNode); isIdent && (id.Value == getName || id.Value == getOptName) && len(x.Arguments) == 2 {
			return x.Arguments[0], x.Arguments[1], true
		}
	}
	return nil, nil, false
}

// fetchPatcher speeds up member access. expr fetches a.b through
// reflection, which allocates, and payloads are all maps: most of the time
// of a condition went there. Plain a.b becomes fetch(a, "b"). Optional
// a?.b, which expr compiles as a jump to the end of the chain when a is
// nil, becomes fetchOptional(a, "b"), which returns a marker that every
// later fetch in the chain passes on and endChain turns into nil: the same
// short-circuit, without the jump. Chains with method calls keep expr's
// own code. A differential test holds the patched and unpatched results
// together.
type fetchPatcher struct{}

func (fetchPatcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.MemberNode:
		if n.Method || n.Optional || !dynamic(n.Node) {
			return
		}
		*node = callNode(getName, n, n.Node, n.Property)
	case *ast.ChainNode:
		// Non-optional members below were patched already (the walk is
		// post-order). Patch the optional ones of this chain unless it
		// calls a method: a method on the marker would fail where expr
		// would have skipped the call.
		optional := false
		for cur := n.Node; cur != nil; {
			switch x := cur.(type) {
			case *ast.MemberNode:
				if x.Method || !dynamic(x.Node) {
					return
				}
				optional = optional || x.Optional
				cur = x.Node
			case *ast.CallNode:
				if m, ok := x.Callee.(*ast.MemberNode); ok && m.Method {
					return
				}
				if !isCallTo(x, getName) {
					cur = nil
					continue
				}
				cur = x.Arguments[0]
			default:
				cur = nil // the chain's base, or an inner chain
			}
		}
		if optional {
			n.Node = callNode(endChainName, n, patchOptional(n.Node))
		}
	}
}

// dynamic reports whether n's value is only known at run time (payload
// data): members of typed values (received_at, now()) keep expr's
// compile-time checks.
func dynamic(n ast.Node) bool {
	t := n.Type()
	return t == nil || t.Kind() == reflect.Interface ||
		(t.Kind() == reflect.Map && t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.Interface)
}

// patchOptional replaces the optional members along a chain.
func patchOptional(n ast.Node) ast.Node {
	switch x := n.(type) {
	case *ast.MemberNode:
		if x.Optional {
			return callNode(getOptName, x, patchOptional(x.Node), x.Property)
		}
	case *ast.CallNode:
		if isCallTo(x, getName) {
			x.Arguments[0] = patchOptional(x.Arguments[0])
		}
	}
	return n
}

func isCallTo(c *ast.CallNode, name string) bool {
	id, ok := c.Callee.(*ast.IdentifierNode)
	return ok && id.Value == name
}

func callNode(name string, at ast.Node, args ...ast.Node) *ast.CallNode {
	c := &ast.CallNode{Callee: &ast.IdentifierNode{Value: name}, Arguments: args}
	c.SetLocation(at.Location())
	c.Callee.SetLocation(at.Location())
	return c
}

// chainSkip marks a chain cut short by a?.b with a nil.
type chainSkip struct{}

var skipped any = &chainSkip{}

// fetch is a.b: a map lookup for JSON objects, expr's own fetch otherwise
// (same results and errors).
func fetch(from, key any) any {
	if m, ok := from.(map[string]any); ok {
		if k, ok := key.(string); ok {
			return m[k]
		}
	}
	if from == skipped {
		return skipped
	}
	return runtime.Fetch(from, key)
}

// fetchOptional is a?.b: the marker when a is nil.
func fetchOptional(from, key any) any {
	if m, ok := from.(map[string]any); ok && m != nil {
		if k, ok := key.(string); ok {
			return m[k]
		}
	}
	if from == skipped || runtime.IsNil(from) {
		return skipped
	}
	return runtime.Fetch(from, key)
}

// endChain ends a patched chain: the marker becomes nil.
func endChain(v any) any {
	if v == skipped {
		return nil
	}
	return v
}

// machine runs compiled expressions for one event (or one execution): the
// environment is built once and reused by every rule, the VM comes from a
// pool so that workers do not allocate one per event.
type machine struct {
	vm     *vm.VM
	env    map[string]any
	budget budget
	chg    changes    // what changed() compares
	fast   *fastState // for native conditions (matching only)
}

var vmPool = sync.Pool{New: func() any { return &vm.VM{MemoryBudget: memoryBudget} }}

func newMachine(in envInput) *machine {
	m := &machine{vm: vmPool.Get().(*vm.VM)}
	in.budget = &m.budget
	in.chg = &m.chg
	m.env = buildEnv(in)
	return m
}

// setPrevious gives the machine the entity's previous payload, found
// after the machine was built (the key is an expression on the event).
func (m *machine) setPrevious(prev any) {
	m.chg.prev = prev
	if _, declared := m.env["previous"]; declared {
		m.env["previous"] = prev
	}
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

// decodePayload decodes an event payload (or a step's response body) so
// that numbers compare with literals in expressions: integral numbers
// become int, others float64. Strings stay strings; nothing is ever parsed
// as a template.
func decodePayload(raw []byte) (any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return map[string]any{}, nil
	}
	v, err := decodeJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("decode payload: %w", err)
	}
	return v, nil
}
