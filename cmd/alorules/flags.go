package main

import (
	"flag"
	"fmt"
	"strings"
	"time"
)

// envFlags registers flags whose defaults come from ALORULES_* environment
// variables, so every flag has an environment equivalent without a second
// list to keep in sync.
type envFlags struct {
	fs     *flag.FlagSet
	getenv func(string) string
	errs   []error
}

func newEnvFlags(name string, getenv func(string) string) *envFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return &envFlags{fs: fs, getenv: getenv}
}

// envName maps --admin-addr to ALORULES_ADMIN_ADDR.
func envName(flagName string) string {
	return "ALORULES_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (f *envFlags) usage(name, usage string) string {
	return fmt.Sprintf("%s (env %s)", usage, envName(name))
}

func (f *envFlags) String(name, def, usage string) *string {
	if v := f.getenv(envName(name)); v != "" {
		def = v
	}
	return f.fs.String(name, def, f.usage(name, usage))
}

func (f *envFlags) Bool(name string, def bool, usage string) *bool {
	if v := f.getenv(envName(name)); v != "" {
		def = v == "1" || strings.EqualFold(v, "true") || strings.EqualFold(v, "yes")
	}
	return f.fs.Bool(name, def, f.usage(name, usage))
}

func (f *envFlags) Int(name string, def int, usage string) *int {
	if v := f.getenv(envName(name)); v != "" {
		if _, err := fmt.Sscan(v, &def); err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not a whole number", envName(name), v))
		}
	}
	return f.fs.Int(name, def, f.usage(name, usage))
}

func (f *envFlags) Duration(name string, def time.Duration, usage string) *time.Duration {
	if v := f.getenv(envName(name)); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: %v", envName(name), v, err))
		}
		def = d
	}
	return f.fs.Duration(name, def, f.usage(name, usage))
}

// Parse parses args and reports environment values that did not parse.
func (f *envFlags) Parse(args []string) error {
	if len(f.errs) > 0 {
		return f.errs[0]
	}
	return f.fs.Parse(args)
}
