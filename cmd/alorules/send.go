package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"alorules"
	"alorules/alo"
)

// cmdSend signs a JSON body with the current time and POSTs it, the way
// ALO would, so a setup can be tried end to end.
func cmdSend(ctx context.Context, args []string, cio cmdIO) int {
	f := newEnvFlags("send", cio.getenv)
	challenge := f.fs.Bool("challenge", false, "send a URL verification handshake instead of an event")
	secretFile := f.String("signing-secret-file", "", "file holding the signing secret (else ALO_SIGNING_SECRET, first value)")
	timeout := f.fs.Duration("timeout", 10*time.Second, "request timeout")
	f.fs.SetOutput(cio.stderr)
	f.fs.Usage = func() {
		fmt.Fprintln(cio.stderr, "usage: alorules send [--challenge] URL [FILE]   (FILE defaults to stdin)")
		f.fs.PrintDefaults()
	}
	if err := f.Parse(args); err != nil {
		return 2
	}
	if f.fs.NArg() < 1 || f.fs.NArg() > 2 {
		f.fs.Usage()
		return 2
	}
	secrets, err := signingSecrets(cio.getenv, *secretFile)
	if err != nil {
		return cio.errorf("%v", err)
	}
	url := f.fs.Arg(0)

	var body []byte
	switch {
	case *challenge:
		body, _ = json.Marshal(map[string]string{"type": alo.TypeURLVerification, "challenge": rand.Text()})
	case f.fs.NArg() == 2 && f.fs.Arg(1) != "-":
		body, err = os.ReadFile(f.fs.Arg(1))
	default:
		body, err = io.ReadAll(cio.stdin)
	}
	if err != nil {
		return cio.errorf("read event: %v", err)
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return cio.errorf("%v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "alorules-send/"+alorules.Version)
	alo.SignRequest(req, secrets[0], time.Now(), body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return cio.errorf("send: %v", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	fmt.Fprintf(cio.stdout, "%s\n%s\n", resp.Status, strings.TrimRight(string(out), "\n"))
	if resp.StatusCode/100 != 2 {
		return 1
	}
	return 0
}

// signingSecrets reads the webhook signing secrets: a file (one per line)
// wins over ALO_SIGNING_SECRET (comma-separated). Several secrets at once
// allow rotation without dropping deliveries.
func signingSecrets(getenv func(string) string, file string) ([]string, error) {
	raw, sep := getenv("ALO_SIGNING_SECRET"), ","
	src := "ALO_SIGNING_SECRET"
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("signing secret file: %w", err)
		}
		// One secret per line, and nothing else splits it: a secret from
		// a file may hold any character but a line break.
		raw, sep = string(b), "\n"
		src = file
	}
	var out []string
	for s := range strings.SplitSeq(raw, sep) {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no signing secret: set ALO_SIGNING_SECRET (comma-separated for rotation) or --signing-secret-file (%s is empty)", src)
	}
	return out, nil
}
