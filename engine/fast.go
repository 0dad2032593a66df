package engine

import (
	"reflect"
	"strconv"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm/runtime"
)

// Most conditions are a few comparisons of payload fields with constants
// joined by && and ||: `event.action?.priority == "Urgent" && ...`. A
// thousand rules means hundreds of them per event, and each VM run has a
// fixed cost well above the work itself. For that shape only, compile
// builds a native evaluator from the compiled expression's tree, using
// expr's own runtime.Equal and runtime.Less so that results are the same.
// Whenever a value is not what the evaluator expects (a fetch from
// something that is not a JSON object, a comparison of mixed types), it
// gives up for that run and the VM evaluates the condition instead, so
// errors and edge cases are expr's. A differential test checks both paths.

// fastBool evaluates a condition; ok is false when the VM must decide.
type fastBool func(st *fastState) (v, ok bool)

// fastValue evaluates a value; ok is false when the VM must decide.
type fastValue func(st *fastState) (v any, ok bool)

// fastState is one event's environment and the values of the paths read
// so far: rules tend to test the same few fields, so each path is fetched
// once per event, whatever the number of rules.
type fastState struct {
	env   map[string]any
	memo  []any
	state []uint8 // per path: 0 not read yet, 1 in memo, 2 the VM decides
	// chg answers changed("path") natively.
	chg *changes
}

func newFastState(env map[string]any, paths int, chg *changes) *fastState {
	return &fastState{env: env, memo: make([]any, paths), state: make([]uint8, paths), chg: chg}
}

// fastCompiler numbers the paths of a rule set's conditions.
type fastCompiler struct {
	paths map[string]int
}

func newFastCompiler() *fastCompiler { return &fastCompiler{paths: map[string]int{}} }

// compile returns the native evaluator of a condition, or nil when it has
// a shape the evaluator does not handle.
func (fc *fastCompiler) compile(n ast.Node) fastBool {
	switch x := n.(type) {
	case *ast.BoolNode:
		v := x.Value
		return func(*fastState) (bool, bool) { return v, true }
	case *ast.CallNode:
		// changed("a.b") with a literal path: the path is split once, at
		// load.
		if !isCallTo(x, "changed") || len(x.Arguments) != 1 {
			return nil
		}
		lit, ok := x.Arguments[0].(*ast.StringNode)
		if !ok {
			return nil
		}
		segs := splitPath(lit.Value)
		// Remembered per event like a path: a rule set where many rules
		// ask about the same field compares it once.
		key := "changed(" + strconv.Quote(lit.Value) + ")"
		id, seen := fc.paths[key]
		if !seen {
			id = len(fc.paths)
			fc.paths[key] = id
		}
		return func(st *fastState) (bool, bool) {
			if st.chg == nil {
				return false, false
			}
			if st.state[id] == 1 {
				return st.memo[id].(bool), true
			}
			v := st.chg.changedAt(segs)
			st.memo[id], st.state[id] = v, 1
			return v, true
		}
	case *ast.UnaryNode:
		if x.Operator != "!" && x.Operator != "not" {
			return nil
		}
		inner := fc.compile(x.Node)
		if inner == nil {
			return nil
		}
		return func(st *fastState) (bool, bool) {
			v, ok := inner(st)
			return !v, ok
		}
	case *ast.BinaryNode:
		switch x.Operator {
		case "&&", "and", "||", "or":
			l, r := fc.compile(x.Left), fc.compile(x.Right)
			if l == nil || r == nil {
				return nil
			}
			and := x.Operator == "&&" || x.Operator == "and"
			return func(st *fastState) (bool, bool) {
				a, ok := l(st)
				if !ok {
					return false, false
				}
				if a != and { // false && ..., true || ...
					return a, true
				}
				return r(st)
			}
		case "==", "!=":
			l, r := fc.operand(x.Left), fc.operand(x.Right)
			if l == nil || r == nil {
				return nil
			}
			neg := x.Operator == "!="
			return func(st *fastState) (bool, bool) {
				a, ok1 := l(st)
				b, ok2 := r(st)
				if !ok1 || !ok2 {
					return false, false
				}
				return runtime.Equal(a, b) != neg, true
			}
		case "<", "<=", ">", ">=":
			l, r := fc.operand(x.Left), fc.operand(x.Right)
			if l == nil || r == nil {
				return nil
			}
			op := x.Operator
			return func(st *fastState) (bool, bool) {
				a, ok1 := l(st)
				b, ok2 := r(st)
				// Only values expr compares without complaint; anything
				// else (nil, mixed kinds) is an error the VM reports.
				if !ok1 || !ok2 || !comparable(a, b) {
					return false, false
				}
				switch op {
				case "<":
					return runtime.Less(a, b), true
				case "<=":
					return runtime.LessOrEqual(a, b), true
				case ">":
					return runtime.More(a, b), true
				}
				return runtime.MoreOrEqual(a, b), true
			}
		}
	}
	return nil
}

func comparable(a, b any) bool {
	switch a.(type) {
	case int, float64:
		switch b.(type) {
		case int, float64:
			return true
		}
	case string:
		_, ok := b.(string)
		return ok
	}
	return false
}

// operand is compileValue, remembering paths per event.
func (fc *fastCompiler) operand(n ast.Node) fastValue {
	inner := compileValue(n)
	key, ok := pathKey(n)
	if inner == nil || !ok {
		return inner
	}
	id, seen := fc.paths[key]
	if !seen {
		id = len(fc.paths)
		fc.paths[key] = id
	}
	return func(st *fastState) (any, bool) {
		switch st.state[id] {
		case 1:
			return st.memo[id], true
		case 2:
			return nil, false
		}
		v, ok := inner(st)
		if ok {
			st.memo[id], st.state[id] = v, 1
		} else {
			st.state[id] = 2
		}
		return v, ok
	}
}

// pathKey names a member path canonically, or reports that n is not one.
func pathKey(n ast.Node) (string, bool) {
	switch x := n.(type) {
	case *ast.IdentifierNode:
		if x.Value == "event" || x.Value == "type" || x.Value == "previous" {
			return x.Value, true
		}
	case *ast.ChainNode:
		if k, ok := pathKey(x.Node); ok {
			return "(" + k + ")", true
		}
	case *ast.CallNode:
		switch {
		case isCallTo(x, endChainName) && len(x.Arguments) == 1:
			return pathKey(x.Arguments[0])
		case (isCallTo(x, getName) || isCallTo(x, getOptName)) && len(x.Arguments) == 2:
			key, isString := x.Arguments[1].(*ast.StringNode)
			base, ok := pathKey(x.Arguments[0])
			if !isString || !ok {
				return "", false
			}
			sep := "."
			if isCallTo(x, getOptName) {
				sep = "?."
			}
			return base + sep + strconv.Quote(key.Value), true
		}
	}
	return "", false
}

// compileValue handles constants and member paths on the environment.
func compileValue(n ast.Node) fastValue {
	switch x := n.(type) {
	case *ast.StringNode:
		v := any(x.Value)
		return func(*fastState) (any, bool) { return v, true }
	case *ast.IntegerNode:
		if t := x.Type(); t == nil || t.Kind() != reflect.Int {
			return nil
		}
		v := any(x.Value)
		return func(*fastState) (any, bool) { return v, true }
	case *ast.FloatNode:
		v := any(x.Value)
		return func(*fastState) (any, bool) { return v, true }
	case *ast.BoolNode:
		v := any(x.Value)
		return func(*fastState) (any, bool) { return v, true }
	case *ast.NilNode:
		return func(*fastState) (any, bool) { return nil, true }
	case *ast.IdentifierNode:
		switch name := x.Value; name {
		case "event", "type":
			return func(st *fastState) (any, bool) { return st.env[name], true }
		case "previous":
			// A typed nil map stands for "no previous": as nil here, the
			// way expr's == and ?. treat it.
			return func(st *fastState) (any, bool) {
				if m, ok := st.env[name].(map[string]any); ok && m == nil {
					return nil, true
				}
				return st.env[name], true
			}
		}
	case *ast.ChainNode:
		inner := compileValue(x.Node)
		if inner == nil {
			return nil
		}
		return func(st *fastState) (any, bool) {
			v, ok := inner(st)
			if !ok || v == skipped {
				return nil, false
			}
			return v, true
		}
	case *ast.CallNode:
		switch {
		case isCallTo(x, endChainName) && len(x.Arguments) == 1:
			inner := compileValue(x.Arguments[0])
			if inner == nil {
				return nil
			}
			return func(st *fastState) (any, bool) {
				v, ok := inner(st)
				if v == skipped {
					v = nil
				}
				return v, ok
			}
		case (isCallTo(x, getName) || isCallTo(x, getOptName)) && len(x.Arguments) == 2:
			key, isString := x.Arguments[1].(*ast.StringNode)
			base := compileValue(x.Arguments[0])
			if !isString || base == nil {
				return nil
			}
			k, optional := key.Value, isCallTo(x, getOptName)
			return func(st *fastState) (any, bool) {
				v, ok := base(st)
				if !ok {
					return nil, false
				}
				if m, isMap := v.(map[string]any); isMap && m != nil {
					return m[k], true
				}
				if v == skipped || (optional && v == nil) {
					return skipped, true
				}
				return nil, false // expr's fetch decides (and errors)
			}
		}
	}
	return nil
}
