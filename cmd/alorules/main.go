// Command alorules receives signed ALO webhooks, stores them, matches them
// against YAML rules and runs the matching rules' steps.
//
// Usage:
//
//	alorules serve   [flags]            run the service
//	alorules check   RULES              validate a rules file
//	alorules test    --rules RULES EVENT.json...
//	alorules test    RULES --tests TESTS.yaml
//	alorules send    [--challenge] URL [FILE]
//	alorules backup  --server URL FILE
//	alorules compact SRC DST
//	alorules version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"alorules"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)) }

const usage = `alorules turns signed ALO webhooks into automation.

Usage:
  alorules serve   [flags]                      run the service (see 'alorules serve -h')
  alorules check   RULES                        validate a rules file
  alorules test    --rules RULES EVENT.json...  show each rule's outcome and rendered steps
  alorules test    RULES --tests TESTS.yaml     run rule unit tests (event sequences, simulated clock)
  alorules send    [--challenge] URL [FILE]     sign a JSON event (FILE or stdin) and POST it
  alorules backup  --server URL FILE            save a consistent copy of a running service's store
  alorules compact SRC DST                      rewrite a stopped store to reclaim space
  alorules version                              print the version
`

// run is main without the process: tests call it with their own streams
// and environment.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, rest := args[0], args[1:]
	cio := cmdIO{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, cio)
	case "check":
		return cmdCheck(rest, cio)
	case "test":
		return cmdTest(ctx, rest, cio)
	case "send":
		return cmdSend(ctx, rest, cio)
	case "backup":
		return cmdBackup(ctx, rest, cio)
	case "compact":
		return cmdCompact(rest, cio)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "alorules %s\n", alorules.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "alorules: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// cmdIO carries a command's streams and environment.
type cmdIO struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

func (c cmdIO) errorf(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "alorules: "+format+"\n", args...)
	return 1
}
