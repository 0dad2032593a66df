package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"alorules"
	"alorules/actions"
	"alorules/alo"
)

// Defaults that apply when the rules file does not set them.
const (
	DefaultAttempts   = 5
	DefaultBackoff    = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	DefaultTimeout    = 10 * time.Second
	// DefaultLoopLimit is how often a rule may fire for one key in a
	// minute before it is suspected of feeding on its own events.
	DefaultLoopLimit = 10
)

// maxFileSize bounds a rules file; real ones are a few kilobytes, and
// candidate files also arrive through the admin API.
const maxFileSize = 16 << 20

// Keys accepted at each level of a rules file.
var (
	rootKeys     = []string{"version", "connections", "defaults", "entity", "rules"}
	entityKeys   = []string{"key", "types"}
	defaultsKeys = []string{"retry", "timeout", "loop_limit"}
	retryKeys    = []string{"attempts", "backoff", "max_backoff"}
	ruleKeys     = []string{"name", "description", "on", "if", "throttle", "after", "unless", "digest", "do", "stop", "retry", "timeout"}
	throttleKeys = []string{"key", "per"}
	digestKeys   = []string{"window", "key", "max"}
	stepKeys     = []string{"id", "continue_on_error", actions.KindSlack, actions.KindHTTP, actions.KindALO}
)

var (
	// Rule names key history, URLs and metric labels, and are joined with
	// ":" into throttle and idempotency keys: no ":" or spaces.
	ruleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)
	// Step ids are read as steps.<id>, so they must be identifiers.
	stepIDRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// RuleSet is a parsed, validated and compiled rules file. It is immutable
// once built and safe for concurrent use; a reload builds a new one.
type RuleSet struct {
	// Connections are the named targets, by name, with their secrets.
	Connections map[string]*actions.Connection
	// Secrets redacts every value that came from ${NAME}.
	Secrets alorules.Redactor
	// jsonSecrets redacts the same values inside JSON text.
	jsonSecrets alorules.Redactor

	file     string
	source   []byte
	hash     string
	rules    []*rule
	byName   map[string]*rule
	byType   map[string]*typeIndex
	anyType  *typeIndex // for types no rule names: the rules without "on"
	loop     int        // loop_limit
	paths    int        // distinct paths read by native conditions
	warnings []Issue
	entity   entitySpec
	deferred bool // some rule has after: (its timers need entity keys)
	// readsState is set when some expression reads previous, changed()
	// or state; otherwise matching leaves them out of the environment.
	readsState bool
}

// DefaultEntityKey finds the entity an event is about when the rules file
// does not say: the ALO action's id.
const DefaultEntityKey = "{{ event.action?.id }}"

// Limits of digests.
const (
	DefaultDigestMax = 50
	MaxDigestMax     = 1000
)

// entitySpec is how an event's entity key is found: per type, else the
// default.
type entitySpec struct {
	key    *tstring // nil: no entity for types not listed
	keySrc string
	types  map[string]*tstring // normalised type -> key
	srcs   map[string]string
}

// rule is one compiled rule.
type rule struct {
	name, description string
	line              int
	on                []string // as written
	types             []string // normalised; nil means every type
	ifSrc             string
	cond              *program // nil: always true
	throttle          *throttle
	steps             []*step
	stop              bool
	retry             alorules.RetryPolicy
	timeout           time.Duration
	// after defers the steps: a timer per entity, cancelled when unless
	// becomes true first.
	after     time.Duration
	unless    *program
	unlessSrc string
	digest    *digest
	// readsPrevious is set when a step template reads previous or
	// changed(), so executions carry the previous payload with them.
	readsPrevious bool
}

// digest collects a rule's matches per key for a window.
type digest struct {
	window time.Duration
	key    *tstring // nil: one digest for the whole rule
	keySrc string
	max    int
}

type throttle struct {
	key    *tstring // nil: one window for the whole rule
	keySrc string
	per    time.Duration
}

// step is one compiled step.
type step struct {
	index           int
	id, kind        string
	continueOnError bool
	tree            *tmap
	conn            *actions.Connection
	usesSteps       bool
	timeout         time.Duration // 0: the rule's
}

// Hash is the SHA-256 of the source, hex: executions record it, so that a
// step is rendered under the rules it was matched with.
func (rs *RuleSet) Hash() string { return rs.hash }

// Source is the file as read, without ${NAME} expanded.
func (rs *RuleSet) Source() []byte { return rs.source }

// File is the name the rule set was parsed under.
func (rs *RuleSet) File() string { return rs.file }

// Len is the number of rules.
func (rs *RuleSet) Len() int { return len(rs.rules) }

// Warnings are the problems that did not stop the file from loading.
func (rs *RuleSet) Warnings() []Issue { return slices.Clone(rs.warnings) }

// RuleInfo describes a loaded rule for the API and the UI.
type RuleInfo struct {
	Name        string        `json:"name"`
	Description string        `json:"description,omitempty"`
	Line        int           `json:"line"`
	On          []string      `json:"on,omitempty"`
	If          string        `json:"if,omitempty"`
	Throttle    *ThrottleInfo `json:"throttle,omitempty"`
	Steps       []string      `json:"steps"` // the kind of each step, in order
	Stop        bool          `json:"stop,omitempty"`
	After       string        `json:"after,omitempty"`
	Unless      string        `json:"unless,omitempty"`
	Digest      *DigestInfo   `json:"digest,omitempty"`
}

// DigestInfo is a rule's digest as written.
type DigestInfo struct {
	Window string `json:"window"`
	Key    string `json:"key,omitempty"`
	Max    int    `json:"max"`
}

// EntityInfo is how the rule set finds an event's entity, as written.
type EntityInfo struct {
	Key   string            `json:"key"`
	Types map[string]string `json:"types,omitempty"`
}

// Entity describes the entity setting (the default when the file has
// none).
func (rs *RuleSet) Entity() EntityInfo {
	info := EntityInfo{Key: rs.entity.keySrc}
	if len(rs.entity.srcs) > 0 {
		info.Types = maps.Clone(rs.entity.srcs)
	}
	return info
}

// ThrottleInfo is a rule's throttle as written.
type ThrottleInfo struct {
	Key string `json:"key,omitempty"`
	Per string `json:"per"`
}

// Rules describes every rule, in file order.
func (rs *RuleSet) Rules() []RuleInfo {
	out := make([]RuleInfo, len(rs.rules))
	for i, r := range rs.rules {
		info := RuleInfo{Name: r.name, Description: r.description, Line: r.line, On: slices.Clone(r.on), If: r.ifSrc, Stop: r.stop, Steps: []string{}}
		if r.throttle != nil {
			info.Throttle = &ThrottleInfo{Key: r.throttle.keySrc, Per: r.throttle.per.String()}
		}
		if r.after > 0 {
			info.After, info.Unless = r.after.String(), r.unlessSrc
		}
		if r.digest != nil {
			info.Digest = &DigestInfo{Window: r.digest.window.String(), Key: r.digest.keySrc, Max: r.digest.max}
		}
		for _, s := range r.steps {
			info.Steps = append(info.Steps, s.kind)
		}
		out[i] = info
	}
	return out
}

// Load reads and parses the rules file at path. Issues name the file as
// path was given.
func Load(path string, getenv func(string) string) (*RuleSet, []Issue, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load rules: %w", err)
	}
	return Parse(path, src, getenv)
}

// Parse parses, validates and compiles a rules file. file names the source
// in issues. getenv expands ${NAME} (os.Getenv if nil); an unset or empty
// variable is an error. It returns the warnings, and on failure a
// *LoadError holding every error found, in line order.
func Parse(file string, src []byte, getenv func(string) string) (*RuleSet, []Issue, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	p := &parser{is: issues{file: file}, getenv: getenv, names: map[string]int{}, broken: map[string]bool{}, fast: newFastCompiler()}
	rs := p.parse(src)
	p.redactIssues()
	sortIssues(p.is.errs)
	sortIssues(p.is.warnings)
	if len(p.is.errs) > 0 {
		return nil, p.is.warnings, &LoadError{Issues: p.is.errs}
	}
	rs.warnings = p.is.warnings
	return rs, p.is.warnings, nil
}

type parser struct {
	is      issues
	getenv  func(string) string
	secrets []string
	rs      *RuleSet
	// broken are the connections defined with errors: their users do
	// not report them again as unknown.
	broken map[string]bool
	names  map[string]int // every rule name seen, with its line
	fast   *fastCompiler
	def    struct {
		retry   alorules.RetryPolicy
		timeout time.Duration
	}
}

// redactIssues hides every ${NAME} value in the messages found. Messages
// quote values as written in the file, so this is a second line of
// defence: candidate rules sent to the admin API are expanded with the
// server's environment, and an error that echoed an expanded value would
// hand its secrets to whoever sent them.
func (p *parser) redactIssues() {
	red := alorules.NewRedactor(p.secrets...)
	for _, list := range [][]Issue{p.is.errs, p.is.warnings} {
		for i := range list {
			list[i].Msg = red.String(list[i].Msg)
		}
	}
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (p *parser) parse(src []byte) *RuleSet {
	sum := sha256.Sum256(src)
	rs := &RuleSet{
		Connections: map[string]*actions.Connection{},
		file:        p.is.file,
		source:      slices.Clone(src),
		hash:        hex.EncodeToString(sum[:]),
		byName:      map[string]*rule{},
		byType:      map[string]*typeIndex{},
		anyType:     &typeIndex{},
		loop:        DefaultLoopLimit,
	}
	p.rs = rs
	p.def.retry = alorules.RetryPolicy{Attempts: DefaultAttempts, Backoff: DefaultBackoff, MaxBackoff: DefaultMaxBackoff}
	p.def.timeout = DefaultTimeout

	if len(src) > maxFileSize {
		p.is.errorf(0, "", "", "file is %d bytes, the limit is %d", len(src), maxFileSize)
		return rs
	}
	if len(bytes.TrimSpace(src)) == 0 {
		// An editor that truncates before writing must not unload every
		// rule: an empty file is an error, not an empty rule set.
		p.is.errorf(0, "", "", "file is empty")
		return rs
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		p.yamlError(err)
		return rs
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.is.errorf(extra.Line, "", "", "only one YAML document is allowed")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		p.is.errorf(doc.Line, "", "", "file is empty")
		return rs
	}
	root := doc.Content[0]
	if p.noAliases(root); len(p.is.errs) > 0 {
		return rs
	}
	if root.Kind != yaml.MappingNode {
		p.is.errorf(root.Line, "", "", "want a mapping with version, connections, defaults and rules, got %s", kindName(root))
		return rs
	}
	f := p.fields(root, "", "", rootKeys)
	if v, ok := f["version"]; ok {
		if n, ok := p.intValue(v, "", "version"); ok && n != 1 {
			p.is.errorf(v.Line, "", "version", "unsupported version %d, want 1", n)
		}
	} else {
		p.is.warnf(root.Line, "", "version", "missing, assuming version: 1")
	}
	if v, ok := f["defaults"]; ok {
		p.defaults(v)
	}
	if v, ok := f["connections"]; ok {
		p.connections(v)
	}
	rs.Secrets = alorules.NewRedactor(p.secrets...)
	p.entity(f["entity"])
	if v, ok := f["rules"]; ok {
		p.rules(v)
	}
	if len(rs.rules) == 0 && len(p.is.errs) == 0 {
		p.is.warnf(root.Line, "", "rules", "no rules: events are recorded but nothing runs")
	}
	// Rules may expand ${NAME} in steps too; redact those as well.
	rs.Secrets = alorules.NewRedactor(p.secrets...)
	rs.jsonSecrets = jsonRedactor(p.secrets)
	p.index()
	rs.paths = len(p.fast.paths)
	rs.readsState = rs.computeReadsState()
	return rs
}

// computeReadsState reports whether any expression of the rule set reads
// previous, changed() or state.
func (rs *RuleSet) computeReadsState() bool {
	reads := false
	check := func(p *program) {
		for _, n := range p.names {
			reads = reads || n == "previous" || n == "changed" || n == "state"
		}
	}
	checkString := func(ts *tstring) {
		if ts == nil {
			return
		}
		for _, seg := range ts.segs {
			if seg.prog != nil {
				check(seg.prog)
			}
		}
	}
	checkString(rs.entity.key)
	for _, ts := range rs.entity.types {
		checkString(ts)
	}
	for _, r := range rs.rules {
		for _, p := range []*program{r.cond, r.unless} {
			if p != nil {
				check(p)
			}
		}
		if r.throttle != nil {
			checkString(r.throttle.key)
		}
		if r.digest != nil {
			checkString(r.digest.key)
		}
		for _, s := range r.steps {
			walkStrings(s.tree, checkString)
		}
	}
	return reads
}

func (p *parser) yamlError(err error) {
	var te *yaml.TypeError
	switch {
	case errors.As(err, &te):
		for _, e := range te.Errors {
			p.lineError(e)
		}
	default:
		p.lineError(err.Error())
	}
}

func (p *parser) lineError(msg string) {
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.is.errorf(line, "", "", "%s", m[2])
		return
	}
	p.is.errorf(0, "", "", "%s", strings.TrimPrefix(msg, "yaml: "))
}

// noAliases rejects YAML aliases: they would make line numbers in errors
// point at the anchor, and nested aliases can expand exponentially.
func (p *parser) noAliases(n *yaml.Node) {
	if n.Kind == yaml.AliasNode {
		p.is.errorf(n.Line, "", "", "aliases (*%s) are not supported; repeat the value", n.Value)
		return
	}
	for _, c := range n.Content {
		p.noAliases(c)
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if n.ShortTag() == "!!null" {
		return "nothing"
	}
	return fmt.Sprintf("%q", n.Value)
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

type entry struct {
	key string
	k   *yaml.Node
	v   *yaml.Node
}

// entries checks a mapping's keys (strings, no duplicates, no merge keys,
// and when known is given, only known keys) and returns them in order.
// A null value stands for an empty mapping.
func (p *parser) entries(n *yaml.Node, rule, field string, known []string) ([]entry, bool) {
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.MappingNode {
		p.is.errorf(n.Line, rule, field, "want a mapping, got %s", kindName(n))
		return nil, false
	}
	var out []entry
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.is.errorf(k.Line, rule, field, "keys must be strings, got %s", kindName(k))
			continue
		}
		key := k.Value
		if key == "<<" {
			p.is.errorf(k.Line, rule, field, "merge keys (<<) are not supported")
			continue
		}
		if line, dup := first[key]; dup {
			p.is.errorf(k.Line, rule, join(field, key), "duplicate key (first at line %d)", line)
			continue
		}
		first[key] = k.Line
		if known != nil && !slices.Contains(known, key) {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := suggest(key, known); s != "" {
				msg += fmt.Sprintf(", did you mean %q?", s)
			}
			p.is.errorf(k.Line, rule, field, "%s", msg)
			continue
		}
		out = append(out, entry{key, k, v})
	}
	return out, true
}

// fields is entries as a map, for fixed sets of keys.
func (p *parser) fields(n *yaml.Node, rule, field string, known []string) map[string]*yaml.Node {
	es, _ := p.entries(n, rule, field, known)
	m := make(map[string]*yaml.Node, len(es))
	for _, e := range es {
		m[e.key] = e.v
	}
	return m
}

func (p *parser) stringValue(n *yaml.Node, rule, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.is.errorf(n.Line, rule, field, "want a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) intValue(n *yaml.Node, rule, field string) (int, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		p.is.errorf(n.Line, rule, field, "want a whole number, got %s", kindName(n))
		return 0, false
	}
	var v int
	if err := n.Decode(&v); err != nil {
		p.is.errorf(n.Line, rule, field, "want a whole number, got %s", kindName(n))
		return 0, false
	}
	return v, true
}

func (p *parser) boolValue(n *yaml.Node, rule, field string) (bool, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		p.is.errorf(n.Line, rule, field, "want true or false, got %s", kindName(n))
		return false, false
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		p.is.errorf(n.Line, rule, field, "want true or false, got %s", kindName(n))
		return false, false
	}
	return v, true
}

func (p *parser) durationValue(n *yaml.Node, rule, field string) (time.Duration, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.is.errorf(n.Line, rule, field, "want a duration such as 10s or 5m, got %s", kindName(n))
		return 0, false
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil || d <= 0 {
		p.is.errorf(n.Line, rule, field, "bad duration %q: want a positive duration such as 10s or 5m", n.Value)
		return 0, false
	}
	return d, true
}

// expand replaces ${NAME} with the environment's value and records the
// value as a secret. "$${" stands for a literal "${".
func (p *parser) expand(s string) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	var missing []string
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			break
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("unterminated ${ in %q", s)
		}
		name := s[i+2 : i+j]
		if !envNameRE.MatchString(name) {
			return "", fmt.Errorf("bad variable name ${%s}", name)
		}
		v := p.getenv(name)
		if v == "" {
			missing = append(missing, name)
		} else {
			p.secrets = append(p.secrets, v)
			b.WriteString(v)
		}
		s = s[i+j+1:]
	}
	switch len(missing) {
	case 0:
		return b.String(), nil
	case 1:
		return "", fmt.Errorf("environment variable %s is not set", missing[0])
	}
	return "", fmt.Errorf("environment variables %s are not set", strings.Join(missing, ", "))
}

func (p *parser) defaults(n *yaml.Node) {
	f := p.fields(n, "", "defaults", defaultsKeys)
	if v, ok := f["retry"]; ok {
		p.def.retry = p.retry(v, "", "defaults.retry", p.def.retry)
	}
	if v, ok := f["timeout"]; ok {
		if d, ok := p.durationValue(v, "", "defaults.timeout"); ok {
			p.def.timeout = d
		}
	}
	if v, ok := f["loop_limit"]; ok {
		if n, ok := p.intValue(v, "", "defaults.loop_limit"); ok {
			if n < 0 {
				p.is.errorf(v.Line, "", "defaults.loop_limit", "want 0 (off) or more, got %d", n)
			} else {
				p.rs.loop = n
			}
		}
	}
}

// retry reads a retry policy over base: keys left out keep base's value.
func (p *parser) retry(n *yaml.Node, rule, field string, base alorules.RetryPolicy) alorules.RetryPolicy {
	r := base
	f := p.fields(n, rule, field, retryKeys)
	if v, ok := f["attempts"]; ok {
		if a, ok := p.intValue(v, rule, field+".attempts"); ok {
			if a < 1 || a > 100 {
				p.is.errorf(v.Line, rule, field+".attempts", "want 1 to 100, got %d", a)
			} else {
				r.Attempts = a
			}
		}
	}
	if v, ok := f["backoff"]; ok {
		if d, ok := p.durationValue(v, rule, field+".backoff"); ok {
			r.Backoff = d
		}
	}
	if v, ok := f["max_backoff"]; ok {
		if d, ok := p.durationValue(v, rule, field+".max_backoff"); ok {
			r.MaxBackoff = d
		}
	}
	if r.MaxBackoff < r.Backoff {
		p.is.errorf(n.Line, rule, field, "max_backoff %s is shorter than backoff %s", r.MaxBackoff, r.Backoff)
	}
	return r
}

func (p *parser) connections(n *yaml.Node) {
	es, _ := p.entries(n, "", "connections", nil)
	for _, e := range es {
		if c := p.connection(e); c != nil {
			p.rs.Connections[e.key] = c
		} else {
			p.broken[e.key] = true
		}
	}
}

// connection builds one connection; nil when it has errors (recorded).
func (p *parser) connection(e entry) *actions.Connection {
	field := "connections." + e.key
	before := len(p.secrets)
	nerr := len(p.is.errs)
	tree := p.build(e.v, reflect.TypeFor[actions.Connection](), bctx{field: field})
	if len(p.is.errs) > nerr {
		return nil
	}
	var c actions.Connection
	if err := decodeStrict(tree.placeholder(), &c); err != nil {
		p.is.errorf(e.v.Line, "", field, "%v", err)
		return nil
	}
	c.Name = e.key
	c.Secrets = slices.Clone(p.secrets[before:])
	c.Redact = alorules.NewRedactor(c.Secrets...)
	if err := c.Validate(); err != nil {
		p.is.errorf(e.v.Line, "", field, "%v", err)
		return nil
	}
	return &c
}

func (p *parser) rules(n *yaml.Node) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.is.errorf(n.Line, "", "rules", "want a list of rules, got %s", kindName(n))
		return
	}
	for _, rn := range n.Content {
		if r := p.rule(rn); r != nil {
			p.rs.rules = append(p.rs.rules, r)
			p.rs.byName[r.name] = r
			p.rs.deferred = p.rs.deferred || r.after > 0
		}
	}
}

// rule compiles one rule; it returns nil when the rule had errors (which
// are recorded) so that the rest of the file is still checked.
func (p *parser) rule(n *yaml.Node) *rule {
	nerr := len(p.is.errs)
	r := &rule{line: n.Line, retry: p.def.retry, timeout: p.def.timeout}
	if n.Kind != yaml.MappingNode {
		p.is.errorf(n.Line, "", "rules", "want a rule (a mapping), got %s", kindName(n))
		return nil
	}
	// The name first: every other message names the rule, even those
	// about its keys.
	label := ""
	if v := mapValue(n, "name"); v != nil && v.Kind == yaml.ScalarNode {
		label = v.Value
	}
	f := p.fields(n, label, "", ruleKeys)
	if v, ok := f["name"]; !ok {
		p.is.errorf(n.Line, "", "name", "required")
	} else if name, ok := p.stringValue(v, "", "name"); ok {
		switch line, dup := p.names[name]; {
		case !ruleNameRE.MatchString(name):
			p.is.errorf(v.Line, name, "name", "use letters, digits, '-', '_' and '.' (at most 100), starting with a letter or digit")
		case dup:
			p.is.errorf(v.Line, name, "name", "duplicate rule name (first at line %d)", line)
		default:
			p.names[name] = v.Line
		}
		r.name = name
	}
	name := r.name
	if v, ok := f["description"]; ok {
		r.description, _ = p.stringValue(v, name, "description")
	}
	if v, ok := f["on"]; ok {
		p.on(r, v)
	}
	if v, ok := f["if"]; ok {
		p.condition(r, v)
	}
	if v, ok := f["retry"]; ok {
		r.retry = p.retry(v, name, "retry", p.def.retry)
	}
	if v, ok := f["timeout"]; ok {
		if d, ok := p.durationValue(v, name, "timeout"); ok {
			r.timeout = d
		}
	}
	if v, ok := f["stop"]; ok {
		r.stop, _ = p.boolValue(v, name, "stop")
	}
	if v, ok := f["throttle"]; ok {
		p.throttle(r, v)
	}
	if v, ok := f["after"]; ok {
		r.after, _ = p.durationValue(v, name, "after")
	}
	if v, ok := f["unless"]; ok {
		p.unless(r, v, f["after"] == nil)
	}
	if v, ok := f["digest"]; ok {
		p.digest(r, v)
	}
	if v, ok := f["do"]; ok {
		p.steps(r, v)
	}
	p.deferChecks(r, n, f)
	if len(p.is.errs) > nerr {
		return nil
	}
	return r
}

// entity reads the top-level entity setting: how to find the thing an
// event is about, whose last payload rules see as previous.
func (p *parser) entity(n *yaml.Node) {
	e := &p.rs.entity
	e.keySrc = DefaultEntityKey
	if n != nil {
		f := p.fields(n, "", "entity", entityKeys)
		if v, ok := f["key"]; ok {
			if src, ok := p.stringValue(v, "", "entity.key"); ok {
				e.keySrc = src
			}
		}
		if v, ok := f["types"]; ok {
			es, _ := p.entries(v, "", "entity.types", nil)
			for _, en := range es {
				field := "entity.types." + en.key
				t := en.key
				switch {
				case alo.IsHandshake(t):
					p.is.errorf(en.k.Line, "", field, "%s is the URL handshake, which is never matched", t)
					continue
				case !alo.KnownType(t):
					if s := alo.Suggest(t); s != "" {
						p.is.errorf(en.k.Line, "", field, "unknown event type %q, did you mean %s?", t, s)
						continue
					}
					p.is.warnf(en.k.Line, "", field, "unknown event type %q", t)
				}
				src, ok := p.stringValue(en.v, "", field)
				if !ok {
					continue
				}
				ts, ok := p.keyTemplate(src, en.v.Line, "", field)
				if !ok {
					continue
				}
				if e.types == nil {
					e.types, e.srcs = map[string]*tstring{}, map[string]string{}
				}
				e.types[alo.NormalizeType(t)], e.srcs[t] = ts, src
			}
		}
	}
	line := 0
	if n != nil {
		line = valueLine(n, "key")
	}
	e.key, _ = p.keyTemplate(e.keySrc, line, "", "entity.key")
}

// keyTemplate compiles a key template (entity, digest key) against the
// condition environment; "" compiles to nil, meaning no key.
func (p *parser) keyTemplate(src string, line int, rule, field string) (*tstring, bool) {
	if strings.TrimSpace(src) == "" {
		return nil, true
	}
	segs, err := parseTemplate(src, false, p.expand)
	if err != nil {
		p.is.errorf(line, rule, field, "%v", err)
		return nil, false
	}
	ts := &tstring{segs: segs, want: reflect.String}
	if ts.single() {
		// A key that is one path ({{ event.action?.id }}) is read
		// natively, without a VM run per event.
		ts.fast = compileValue(segs[0].prog.prog.Node())
	}
	return ts, true
}

func (p *parser) unless(r *rule, n *yaml.Node, noAfter bool) {
	src, ok := p.stringValue(n, r.name, "unless")
	if !ok {
		return
	}
	if noAfter {
		p.is.errorf(n.Line, r.name, "unless", "only a rule with after: has an unless (it cancels the timer)")
		return
	}
	if strings.TrimSpace(src) == "" {
		p.is.errorf(n.Line, r.name, "unless", "empty condition: leave out unless")
		return
	}
	prog, err := compile(src, false, true)
	if err != nil {
		line := n.Line + err.Line - 1
		if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			line++
		}
		p.is.errorf(line, r.name, "unless", "%s", err.Error())
		return
	}
	prog.fast = p.fast.compile(prog.prog.Node())
	r.unless, r.unlessSrc = prog, src
}

func (p *parser) digest(r *rule, n *yaml.Node) {
	f := p.fields(n, r.name, "digest", digestKeys)
	d := &digest{max: DefaultDigestMax}
	if v, ok := f["window"]; ok {
		d.window, _ = p.durationValue(v, r.name, "digest.window")
	} else {
		p.is.errorf(n.Line, r.name, "digest.window", "required")
	}
	if v, ok := f["max"]; ok {
		if m, ok := p.intValue(v, r.name, "digest.max"); ok {
			if m < 1 || m > MaxDigestMax {
				p.is.errorf(v.Line, r.name, "digest.max", "want 1 to %d, got %d", MaxDigestMax, m)
			}
			d.max = m
		}
	}
	if v, ok := f["key"]; ok {
		if src, ok := p.stringValue(v, r.name, "digest.key"); ok {
			d.keySrc = src
			d.key, _ = p.keyTemplate(src, v.Line, r.name, "digest.key")
		}
	}
	r.digest = d
}

// deferChecks refuses combinations that have no clear meaning and names
// in step templates that the rule's kind never provides.
func (p *parser) deferChecks(r *rule, n *yaml.Node, f map[string]*yaml.Node) {
	line := func(key string) int {
		if v := f[key]; v != nil {
			return v.Line
		}
		return n.Line
	}
	if r.after > 0 && f["digest"] != nil {
		p.is.errorf(line("digest"), r.name, "digest", "a rule has after: or digest:, not both")
	}
	if f["throttle"] != nil && (f["after"] != nil || f["digest"] != nil) {
		p.is.errorf(line("throttle"), r.name, "throttle", "a rule with after: or digest: runs at most once per entity or window already; leave out throttle")
	}
	for _, s := range r.steps {
		walkStrings(s.tree, func(ts *tstring) {
			for _, seg := range ts.segs {
				if seg.prog == nil {
					continue
				}
				for _, name := range seg.prog.names {
					switch {
					case name == "previous" || name == "changed":
						r.readsPrevious = true
					case (name == "events" || name == "digest") && r.digest == nil:
						p.is.errorf(ts.line, r.name, ts.field, "%s: only a rule with digest: has it", name)
					case name == "timer" && r.after == 0:
						p.is.errorf(ts.line, r.name, ts.field, "timer: only a rule with after: has it")
					}
				}
			}
		})
	}
}

func (p *parser) on(r *rule, n *yaml.Node) {
	var items []*yaml.Node
	switch {
	case n.Kind == yaml.SequenceNode:
		items = n.Content
	case n.Kind == yaml.ScalarNode && !isNull(n):
		items = []*yaml.Node{n}
	default:
		p.is.errorf(n.Line, r.name, "on", "want an event type or a list of them, got %s", kindName(n))
		return
	}
	if len(items) == 0 {
		p.is.errorf(n.Line, r.name, "on", "empty list: leave out on to match every type")
		return
	}
	r.types = []string{}
	for _, it := range items {
		t, ok := p.stringValue(it, r.name, "on")
		if !ok {
			continue
		}
		switch {
		case alo.IsHandshake(t):
			p.is.errorf(it.Line, r.name, "on", "%s is the URL handshake, which is never matched", t)
			continue
		case !alo.KnownType(t):
			if s := alo.Suggest(t); s != "" {
				p.is.errorf(it.Line, r.name, "on", "unknown event type %q, did you mean %s?", t, s)
				continue
			}
			p.is.warnf(it.Line, r.name, "on", "unknown event type %q (the rule will see it if ALO sends it)", t)
		}
		r.on = append(r.on, t)
		if nt := alo.NormalizeType(t); !slices.Contains(r.types, nt) {
			r.types = append(r.types, nt)
		}
	}
}

func (p *parser) condition(r *rule, n *yaml.Node) {
	src, ok := p.stringValue(n, r.name, "if")
	if !ok {
		return
	}
	if strings.TrimSpace(src) == "" {
		p.is.errorf(n.Line, r.name, "if", "empty condition: leave out if to match every event")
		return
	}
	r.ifSrc = src
	prog, err := compile(src, false, true)
	if err != nil {
		line := n.Line + err.Line - 1
		if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			line++ // a block scalar starts on the line after "if: |"
		}
		p.is.errorf(line, r.name, "if", "%s", err.Error())
		return
	}
	prog.fast = p.fast.compile(prog.prog.Node())
	r.cond = prog
}

func (p *parser) throttle(r *rule, n *yaml.Node) {
	f := p.fields(n, r.name, "throttle", throttleKeys)
	t := &throttle{}
	if v, ok := f["per"]; ok {
		t.per, _ = p.durationValue(v, r.name, "throttle.per")
	} else {
		p.is.errorf(n.Line, r.name, "throttle.per", "required")
	}
	if v, ok := f["key"]; ok {
		if src, ok := p.stringValue(v, r.name, "throttle.key"); ok {
			t.keySrc = src
			segs, err := parseTemplate(src, false, p.expand)
			if err != nil {
				p.is.errorf(v.Line, r.name, "throttle.key", "%v", err)
			} else {
				t.key = &tstring{segs: segs, want: reflect.String}
			}
		}
	}
	r.throttle = t
}

func (p *parser) steps(r *rule, n *yaml.Node) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.is.errorf(n.Line, r.name, "do", "want a list of steps, got %s", kindName(n))
		return
	}
	ids := map[string]int{} // id -> line of earlier steps
	for i, sn := range n.Content {
		field := fmt.Sprintf("do[%d]", i)
		nerr := len(p.is.errs)
		if isNull(sn) {
			p.is.errorf(sn.Line, r.name, field, "empty step")
			continue
		}
		f := p.fields(sn, r.name, field, stepKeys)
		if sn.Kind != yaml.MappingNode {
			continue
		}
		s := &step{index: i}
		var kinds []string
		for _, k := range actions.Kinds {
			if _, ok := f[k]; ok {
				kinds = append(kinds, k)
			}
		}
		switch len(kinds) {
		case 0:
			p.is.errorf(sn.Line, r.name, field, "a step needs one of slack, http or alo")
		case 1:
			s.kind = kinds[0]
		default:
			p.is.errorf(sn.Line, r.name, field, "a step takes exactly one of slack, http or alo, got %s", strings.Join(kinds, " and "))
		}
		if v, ok := f["id"]; ok {
			if id, ok := p.stringValue(v, r.name, field+".id"); ok {
				switch line, dup := ids[id]; {
				case !stepIDRE.MatchString(id):
					p.is.errorf(v.Line, r.name, field+".id", "%q is not an identifier (letters, digits and _, not starting with a digit)", id)
				case dup:
					p.is.errorf(v.Line, r.name, field+".id", "duplicate step id %q (first at line %d)", id, line)
				}
				s.id = id
			}
		}
		if v, ok := f["continue_on_error"]; ok {
			s.continueOnError, _ = p.boolValue(v, r.name, field+".continue_on_error")
		}
		if s.kind != "" {
			p.stepSpec(r, s, f[s.kind], field+"."+s.kind, ids)
		}
		if s.id != "" {
			if _, dup := ids[s.id]; !dup {
				ids[s.id] = sn.Line
			}
		}
		if len(p.is.errs) == nerr {
			r.steps = append(r.steps, s)
		}
	}
}

// stepSpec compiles a step's kind mapping into a template tree and checks
// it as far as possible at load: keys and shapes against the spec type,
// the connection, steps.<id> references, and the spec's own validation on
// a placeholder rendering.
func (p *parser) stepSpec(r *rule, s *step, n *yaml.Node, field string, earlier map[string]int) {
	spec, err := actions.NewSpec(s.kind)
	if err != nil {
		p.is.errorf(n.Line, r.name, field, "%v", err)
		return
	}
	nerr := len(p.is.errs)
	tree := p.build(n, reflect.TypeOf(spec), bctx{rule: r.name, field: field, kind: s.kind, templates: true})
	if len(p.is.errs) > nerr {
		return
	}
	tm, ok := tree.(*tmap)
	if !ok {
		p.is.errorf(n.Line, r.name, field, "want a mapping, got %s", kindName(n))
		return
	}
	s.tree = tm
	// The connection must be a literal name, checked now: a templated one
	// would let event data choose where secrets are sent.
	if cn := tm.get("connection"); cn != nil {
		line := valueLine(n, "connection")
		switch c := cn.(type) {
		case *tstring:
			p.is.errorf(line, r.name, field+".connection", "must be a literal connection name, not a template")
		case tconst:
			name, _ := c.v.(string)
			conn, ok := p.rs.Connections[name]
			if !ok && !p.broken[name] {
				// The name as written: after ${NAME} expansion it may
				// hold a secret, and a hint near it would hint at it.
				raw := rawValue(n, "connection")
				msg := fmt.Sprintf("unknown connection %q", raw)
				if raw == name {
					// Broken connections are defined too: a typo
					// of one is worth pointing at.
					names := append(mapKeys(p.rs.Connections), mapKeys(p.broken)...)
					if sg := suggest(name, names); sg != "" {
						msg += fmt.Sprintf(", did you mean %q?", sg)
					}
				}
				p.is.errorf(line, r.name, field+".connection", "%s", msg)
			}
			s.conn = conn
		}
	}
	walkStrings(tm, func(ts *tstring) {
		for _, seg := range ts.segs {
			if seg.prog == nil {
				continue
			}
			s.usesSteps = s.usesSteps || seg.prog.usesSteps
			for _, ref := range seg.prog.stepRefs {
				if _, ok := earlier[ref]; !ok {
					p.is.errorf(ts.line, r.name, ts.field, "steps.%s: no earlier step in this rule has id %q", ref, ref)
				}
			}
		}
	})
	if len(p.is.errs) > nerr {
		return
	}
	if err := decodeStrict(tm.placeholder(), spec); err != nil {
		p.is.errorf(n.Line, r.name, field, "%v", err)
		return
	}
	if err := spec.Validate(s.conn); err != nil {
		p.is.errorf(n.Line, r.name, field, "%v", err)
		return
	}
	if tn, ok := tm.get("timeout").(tconst); ok {
		if ts, _ := tn.v.(string); ts != "" {
			d, err := time.ParseDuration(ts)
			if err != nil || d <= 0 {
				p.is.errorf(valueLine(n, "timeout"), r.name, field+".timeout", "bad duration %q: want a positive duration such as 10s or 5m", rawValue(n, "timeout"))
			}
			s.timeout = d
		}
	}
}

func mapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// valueLine is the line of key's value in mapping n, or n's line.
func valueLine(n *yaml.Node, key string) int {
	if v := mapValue(n, key); v != nil {
		return v.Line
	}
	return n.Line
}

// rawValue is the text of key's value in mapping n as written, before
// ${NAME} expansion: what an error may quote without revealing a secret.
func rawValue(n *yaml.Node, key string) string {
	if v := mapValue(n, key); v != nil {
		return v.Value
	}
	return ""
}

// mapValue is the first value of key in mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// bctx is where build is in the file.
type bctx struct {
	rule, field string
	kind        string   // step kind; "" outside steps
	keys        []string // path from the spec's root
	templates   bool     // strings may hold {{ }}
}

func (c bctx) with(key string) bctx {
	c.field = join(c.field, key)
	c.keys = append(slices.Clip(c.keys), key)
	return c
}

func (c bctx) at(i int) bctx {
	c.field = fmt.Sprintf("%s[%d]", c.field, i)
	c.keys = append(slices.Clip(c.keys), strconv.Itoa(i))
	return c
}

// escaper picks the escaping for values inserted at this place.
func (c bctx) escaper() escaper {
	last := ""
	if len(c.keys) > 0 {
		last = c.keys[len(c.keys)-1]
	}
	switch c.kind {
	case actions.KindSlack:
		if last == "text" && (len(c.keys) == 1 || c.keys[0] == "blocks") {
			return escSlack
		}
	case actions.KindHTTP:
		if len(c.keys) == 1 && (last == "url" || last == "path") {
			return escURL
		}
	case actions.KindALO:
		if slices.Equal(c.keys, []string{"request", "path"}) {
			return escURL
		}
	}
	return escRaw
}

// build walks a YAML node against the Go type it will be decoded into
// (nil for any value), checking keys and shapes, and compiles it into a
// template tree.
func (p *parser) build(n *yaml.Node, t reflect.Type, c bctx) tnode {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode || isNull(n) {
		return tconst{nil}
	}
	kind := reflect.Interface
	if t != nil {
		kind = t.Kind()
	}
	switch {
	case kind == reflect.Struct:
		fieldTypes := yamlFields(t)
		es, ok := p.entries(n, c.rule, c.field, mapKeys(fieldTypes))
		if !ok {
			return tconst{nil}
		}
		m := &tmap{}
		for _, e := range es {
			m.keys = append(m.keys, e.key)
			m.vals = append(m.vals, p.build(e.v, fieldTypes[e.key], c.with(e.key)))
		}
		return m
	case kind == reflect.Map || (kind == reflect.Interface && n.Kind == yaml.MappingNode):
		var elem reflect.Type
		if kind == reflect.Map {
			elem = t.Elem()
		}
		es, ok := p.entries(n, c.rule, c.field, nil)
		if !ok {
			return tconst{nil}
		}
		m := &tmap{}
		for _, e := range es {
			m.keys = append(m.keys, e.key)
			m.vals = append(m.vals, p.build(e.v, elem, c.with(e.key)))
		}
		return m
	case n.Kind == yaml.SequenceNode && (kind == reflect.Slice || kind == reflect.Interface):
		var elem reflect.Type
		if kind == reflect.Slice {
			elem = t.Elem()
		}
		l := make(tlist, len(n.Content))
		for i, e := range n.Content {
			l[i] = p.build(e, elem, c.at(i))
		}
		return l
	case n.Kind != yaml.ScalarNode:
		p.is.errorf(n.Line, c.rule, c.field, "want %s, got %s", want(kind), kindName(n))
		return tconst{nil}
	}
	return p.scalar(n, kind, c)
}

func want(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a whole number"
	}
	return "a value"
}

func (p *parser) scalar(n *yaml.Node, kind reflect.Kind, c bctx) tnode {
	tag := n.ShortTag()
	if tag == "!!str" || (tag != "!!int" && tag != "!!float" && tag != "!!bool") {
		if c.templates && strings.Contains(n.Value, "{{") {
			segs, err := parseTemplate(n.Value, true, p.expand)
			if err != nil {
				p.is.errorf(n.Line, c.rule, c.field, "%v", err)
				return tconst{nil}
			}
			ts := &tstring{segs: segs, esc: c.escaper(), want: kind, line: n.Line, field: c.field}
			if kind != reflect.String && kind != reflect.Interface && !ts.single() {
				p.is.errorf(n.Line, c.rule, c.field, "want %s, got text", want(kind))
				return tconst{nil}
			}
			return ts
		}
		s, err := p.expand(n.Value)
		if err != nil {
			p.is.errorf(n.Line, c.rule, c.field, "%v", err)
			return tconst{nil}
		}
		if kind != reflect.String && kind != reflect.Interface {
			p.is.errorf(n.Line, c.rule, c.field, "want %s, got %s", want(kind), kindName(n))
			return tconst{nil}
		}
		return tconst{s}
	}
	if kind == reflect.String {
		// A literal number or boolean where text is expected: keep it as
		// written (channel_id: 12345).
		return tconst{n.Value}
	}
	var v any
	var ok bool
	switch tag {
	case "!!int":
		var i int
		ok = n.Decode(&i) == nil && (kind == reflect.Interface || kind == reflect.Int || kind == reflect.Int64 || kind == reflect.Int32)
		v = i
	case "!!float":
		var f float64
		ok = n.Decode(&f) == nil && kind == reflect.Interface
		v = f
	case "!!bool":
		var b bool
		ok = n.Decode(&b) == nil && (kind == reflect.Interface || kind == reflect.Bool)
		v = b
	}
	if !ok {
		p.is.errorf(n.Line, c.rule, c.field, "want %s, got %s", want(kind), kindName(n))
		return tconst{nil}
	}
	return tconst{v}
}

// fieldCache holds yamlFields per type: every step walks the same few.
var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// yamlFields maps a struct's YAML keys to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	out := map[string]reflect.Type{}
	defer fieldCache.Store(t, out)
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		ft := f.Type
		if ft.Kind() == reflect.Interface {
			ft = nil
		}
		out[name] = ft
	}
	return out
}

// decodeStrict turns rendered plain values into a spec or connection the
// way the runner will: through JSON, refusing unknown fields.
func decodeStrict(v any, dst any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	// Numbers inside free-form values (json bodies, blocks) stay exact:
	// a float64 would mangle 64-bit ids.
	dec.UseNumber()
	if err := dec.Decode(dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s: want %s, got a JSON %s", te.Field, te.Type, te.Value)
		}
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// walkStrings calls f for every template string in a tree.
func walkStrings(n tnode, f func(*tstring)) {
	switch t := n.(type) {
	case *tmap:
		for _, v := range t.vals {
			walkStrings(v, f)
		}
	case tlist:
		for _, v := range t {
			walkStrings(v, f)
		}
	case *tstring:
		f(t)
	}
}

// typeIndex is what matching needs for one event type: the rules that see
// it, and the results of an event that no rule has looked at yet (every
// rule skipped, the rest overwritten as they are evaluated).
type typeIndex struct {
	apply   []int32
	results []alorules.RuleResult
}

// index builds the per-type lists of rules, so that matching an event runs
// only the rules that can see its type, in file order.
func (p *parser) index() {
	rs := p.rs
	types := slices.Clone(alo.EventTypes)
	for _, r := range rs.rules {
		for _, t := range r.types {
			if !slices.Contains(types, t) {
				types = append(types, t)
			}
		}
	}
	build := func(sees func(*rule) bool) *typeIndex {
		ti := &typeIndex{results: make([]alorules.RuleResult, len(rs.rules))}
		for i, r := range rs.rules {
			ti.results[i] = alorules.RuleResult{Rule: r.name, Outcome: alorules.OutcomeSkipped}
			if sees(r) {
				ti.apply = append(ti.apply, int32(i))
			}
		}
		return ti
	}
	rs.anyType = build(func(r *rule) bool { return r.types == nil })
	for _, t := range types {
		rs.byType[t] = build(func(r *rule) bool { return r.types == nil || slices.Contains(r.types, t) })
	}
}
