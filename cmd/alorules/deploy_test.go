package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnit keeps deploy/alorules.service honest: the hardening that
// README.md promises is there, every ALORULES_* variable it sets
// is a serve flag that changes the configuration (a misspelt one would be
// ignored silently), and systemd-analyze accepts the unit where it is
// installed.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../deploy/alorules.service")
	if err != nil {
		t.Fatal(err)
	}
	directives := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		directives[k] = append(directives[k], v)
	}
	for k, want := range map[string]string{
		"DynamicUser":             "yes",
		"StateDirectory":          "alorules",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter":        "@system-service",
		"EnvironmentFile":         "/etc/alorules/alorules.env",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"Restart":                 "on-failure",
	} {
		found := false
		for _, v := range directives[k] {
			found = found || v == want
		}
		if !found {
			t.Errorf("unit lacks %s=%s (has %q)", k, want, directives[k])
		}
	}

	env := map[string]string{}
	for _, v := range directives["Environment"] {
		k, val, _ := strings.Cut(v, "=")
		env[k] = val
	}
	getenv := func(k string) string {
		if k == "ALO_SIGNING_SECRET" {
			return "s"
		}
		return env[k]
	}
	// Every flag's help names its variable: a misspelt one in the unit
	// would be ignored without a word.
	var help bytes.Buffer
	parseServe([]string{"-h"}, cmdIO{stdout: io.Discard, stderr: &help, getenv: getenv})
	for k := range env {
		if strings.HasPrefix(k, "ALORULES_") && !strings.Contains(help.String(), "(env "+k+")") {
			t.Errorf("the unit sets %s, which is no serve flag", k)
		}
	}
	cfg, err := parseServe(nil, cmdIO{stdout: io.Discard, stderr: io.Discard, getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DB != "/var/lib/alorules/alorules.db" || cfg.Rules != "/etc/alorules/rules.yaml" ||
		cfg.AdminAddr != "127.0.0.1:8081" || cfg.Addr != "127.0.0.1:8080" || cfg.LogFormat != "json" {
		t.Errorf("got %+v, want the store in the state directory, the rules in /etc/alorules, both listeners on loopback and JSON logs", cfg)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed; unit not verified by systemd")
		return
	}
	// verify wants the binary and the environment file to exist.
	self, _ := os.Executable()
	tmp := filepath.Join(t.TempDir(), "alorules.service")
	edited := strings.NewReplacer("ExecStart=/usr/local/bin/alorules", "ExecStart="+self,
		"EnvironmentFile=/", "EnvironmentFile=-/").Replace(string(unit))
	if err := os.WriteFile(tmp, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", tmp).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
