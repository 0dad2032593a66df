package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"alorules"
	"alorules/engine"
	"alorules/web"
)

// placeholderEnv lets `check` and `test` run where the connection secrets
// are not set (CI): a missing ${NAME} becomes a harmless placeholder
// instead of a load error. The placeholder is a URL on a reserved domain,
// so that it passes where a URL is wanted and reaches nobody.
func placeholderEnv(getenv func(string) string) func(string) string {
	return func(name string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return "https://placeholder.invalid/" + strings.ToLower(name)
	}
}

func printIssues(w io.Writer, issues []engine.Issue) {
	for _, is := range issues {
		fmt.Fprintln(w, is.String())
	}
}

// cmdCheck validates a rules file: exit 0 with a summary, or exit 1 with
// every problem, one per line, as file:line: rule "name": field: message.
func cmdCheck(args []string, cio cmdIO) int {
	f := newEnvFlags("check", cio.getenv)
	f.fs.SetOutput(cio.stderr)
	placeholders := f.fs.Bool("env-placeholders", false, "treat missing ${NAME} variables as placeholders (for CI without secrets)")
	f.fs.Usage = func() {
		fmt.Fprintln(cio.stderr, "usage: alorules check [--env-placeholders] RULES")
		f.fs.PrintDefaults()
	}
	if err := f.Parse(args); err != nil {
		return 2
	}
	if f.fs.NArg() != 1 {
		f.fs.Usage()
		return 2
	}
	getenv := cio.getenv
	if *placeholders {
		getenv = placeholderEnv(getenv)
	}
	rs, warns, err := engine.Load(f.fs.Arg(0), getenv)
	printIssues(cio.stderr, warns)
	if err != nil {
		var le *engine.LoadError
		if errors.As(err, &le) {
			printIssues(cio.stdout, le.Issues)
			fmt.Fprintf(cio.stderr, "%s: %d error(s)\n", f.fs.Arg(0), len(le.Issues))
			return 1
		}
		return cio.errorf("%v", err)
	}
	fmt.Fprintf(cio.stdout, "%s: ok: %d rules, %d connections, %d warning(s), hash %s\n",
		f.fs.Arg(0), rs.Len(), len(rs.Connections), len(warns), shortHash(rs.Hash()))
	return 0
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// cmdTest shows what a rules file makes of events: given as files, or the
// stored events of a running service (--server), through its API; or runs
// rule unit tests (--tests) against a simulated clock.
func cmdTest(ctx context.Context, args []string, cio cmdIO) int {
	f := newEnvFlags("test", cio.getenv)
	f.fs.SetOutput(cio.stderr)
	rulesPath := f.fs.String("rules", "", "candidate rules file")
	tests := f.fs.String("tests", "", "rule unit tests: a YAML file of event sequences and expectations")
	asJSON := f.fs.Bool("json", false, "print JSON for machines")
	server := f.fs.String("server", "", "admin URL of a running alorules: test against its stored events")
	since := f.fs.Duration("since", 24*time.Hour, "with --server: how far back to take stored events")
	placeholders := f.fs.Bool("env-placeholders", false, "treat missing ${NAME} variables as placeholders")
	f.fs.Usage = func() {
		fmt.Fprintln(cio.stderr, "usage: alorules test RULES --tests TESTS.yaml [--json]\n       alorules test --rules RULES [--json] EVENT.json...\n       alorules test --rules RULES --server URL [--since 24h] [--json]")
		f.fs.PrintDefaults()
	}
	if err := f.Parse(args); err != nil {
		return 2
	}
	// Flags may come after the rules file: alorules test RULES --tests T.
	var pos []string
	for f.fs.NArg() > 0 {
		pos = append(pos, f.fs.Arg(0))
		if err := f.fs.Parse(f.fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if *rulesPath == "" && len(pos) > 0 && (*tests != "" || *server != "" || len(pos) > 1) {
		*rulesPath, pos = pos[0], pos[1:]
	}
	getenv := cio.getenv
	if *placeholders {
		getenv = placeholderEnv(getenv)
	}
	if *tests != "" {
		if *rulesPath == "" || len(pos) > 0 || *server != "" {
			f.fs.Usage()
			return 2
		}
		return cmdRuleTests(ctx, *rulesPath, *tests, getenv, *asJSON, cio)
	}
	if *rulesPath == "" || (*server == "" && len(pos) == 0) {
		f.fs.Usage()
		return 2
	}

	var results []engine.TestResult
	if *server != "" {
		src, err := os.ReadFile(*rulesPath)
		if err != nil {
			return cio.errorf("%v", err)
		}
		req := web.RulesTestRequest{Rules: string(src), File: filepath.Base(*rulesPath)}
		res, err := testAgainstServer(ctx, *server, req, *since, cio.getenv)
		if err != nil {
			return cio.errorf("%v", err)
		}
		if len(res.Issues) > 0 {
			printIssues(cio.stdout, res.Issues)
			return 1
		}
		results = res.Results
	} else {
		rs, warns, err := engine.Load(*rulesPath, getenv)
		printIssues(cio.stderr, warns)
		if err != nil {
			var le *engine.LoadError
			if errors.As(err, &le) {
				printIssues(cio.stdout, le.Issues)
				return 1
			}
			return cio.errorf("%v", err)
		}
		for _, path := range pos {
			body, err := os.ReadFile(path)
			if err != nil {
				return cio.errorf("%v", err)
			}
			ev, err := engine.NewEvent(body, time.Now().UTC())
			if err != nil {
				return cio.errorf("%s: %v", path, err)
			}
			ev.ID = path
			results = append(results, engine.Test(rs, ev, time.Now()))
		}
	}

	if *asJSON {
		enc := json.NewEncoder(cio.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"results": results}); err != nil {
			return cio.errorf("%v", err)
		}
		return 0
	}
	for _, r := range results {
		printTestResult(cio.stdout, r)
	}
	n := countOutcomes(results)
	fmt.Fprintf(cio.stdout, "%d event(s): %d matched, %d not matched, %d skipped, %d throttled, %d error(s)\n",
		len(results), n[alorules.OutcomeMatched], n[alorules.OutcomeNotMatched], n[alorules.OutcomeSkipped],
		n[alorules.OutcomeThrottled], n[alorules.OutcomeError])
	return 0
}

func printTestResult(w io.Writer, r engine.TestResult) {
	fmt.Fprintf(w, "event %s (%s)\n", r.EventID, r.Type)
	if r.Note != "" {
		fmt.Fprintf(w, "  %s\n", r.Note)
	}
	for _, rr := range r.Results {
		line := fmt.Sprintf("  %-28s %s", rr.Rule, rr.Outcome)
		if rr.Error != "" {
			line += ": " + rr.Error
		}
		if rr.Stopped {
			line += " (stop: later rules not evaluated)"
		}
		fmt.Fprintln(w, line)
		for _, s := range rr.Steps {
			name := s.Kind
			if s.ID != "" {
				name += " " + s.ID
			}
			switch {
			case s.Error != "":
				fmt.Fprintf(w, "    step %d %s: error: %s\n", s.Index+1, name, s.Error)
			default:
				fmt.Fprintf(w, "    step %d %s: %s\n", s.Index+1, name, s.Request)
				if s.Note != "" {
					fmt.Fprintf(w, "      note: %s\n", s.Note)
				}
			}
		}
	}
}

// adminClient talks to a running service's admin API with the
// credentials from the environment.
type adminClient struct {
	base   string
	getenv func(string) string
	http   *http.Client
}

func (c *adminClient) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.base, "/")+path, rd)
	if err != nil {
		return err
	}
	c.authorize(req)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 && !(resp.StatusCode == 400 && out != nil && json.Valid(raw)) {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(raw)))
	}
	return json.Unmarshal(raw, out)
}

func (c *adminClient) authorize(req *http.Request) {
	if tok := c.getenv("ALORULES_ADMIN_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	} else if u, p := c.getenv("ALORULES_ADMIN_USER"), c.getenv("ALORULES_ADMIN_PASSWORD"); u != "" {
		req.SetBasicAuth(u, p)
	}
}

// testAgainstServer pages through the server's events newer than since and
// has the server evaluate the candidate rules of req against them.
func testAgainstServer(ctx context.Context, base string, req web.RulesTestRequest, since time.Duration, getenv func(string) string) (web.RulesTestResponse, error) {
	c := &adminClient{base: base, getenv: getenv, http: &http.Client{Timeout: 60 * time.Second}}
	cutoff := time.Now().Add(-since)
	var ids []string
	before := ""
	for {
		var page struct {
			Events []struct {
				ID         string    `json:"id"`
				ReceivedAt time.Time `json:"received_at"`
				Handshake  bool      `json:"handshake"`
			} `json:"events"`
			Next string `json:"next"`
		}
		q := url.Values{"limit": {"500"}}
		if before != "" {
			q.Set("before", before)
		}
		if err := c.do(ctx, http.MethodGet, "/api/v1/events?"+q.Encode(), nil, &page); err != nil {
			return web.RulesTestResponse{}, err
		}
		done := page.Next == ""
		for _, ev := range page.Events {
			if ev.ReceivedAt.Before(cutoff) {
				done = true
				break
			}
			if !ev.Handshake {
				ids = append(ids, ev.ID)
			}
		}
		if done {
			break
		}
		before = page.Next
	}
	var all web.RulesTestResponse
	if len(ids) == 0 {
		return all, fmt.Errorf("no events on %s in the last %s", base, since)
	}
	for start := 0; start < len(ids); start += 500 {
		end := min(start+500, len(ids))
		var res web.RulesTestResponse
		req.EventIDs = ids[start:end]
		err := c.do(ctx, http.MethodPost, "/api/v1/rules/test", req, &res)
		if err != nil {
			return all, err
		}
		if len(res.Issues) > 0 {
			return res, nil
		}
		all.Hash = res.Hash
		all.Results = append(all.Results, res.Results...)
	}
	return all, nil
}

// Outcome counts for summaries.
func countOutcomes(results []engine.TestResult) map[alorules.Outcome]int {
	n := map[alorules.Outcome]int{}
	for _, r := range results {
		for _, rr := range r.Results {
			n[rr.Outcome]++
		}
	}
	return n
}
