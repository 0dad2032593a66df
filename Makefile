# alorules: the two commands a newcomer needs are `make run` and `make test`.
GO       ?= go
BIN      := bin/alorules
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X alorules.Version=$(VERSION)
DATA     ?= data
# A development-only signing secret, printed by `make run` so that
# `alorules send` works at once. Never use it for a real ALO app.
DEV_SECRET ?= dev-signing-secret-change-me
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(HOME)/go/bin/staticcheck)

.PHONY: run build test bench bench-ui lint fuzz soak vulncheck clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/alorules

# rules.example.yaml reads these; real deployments set them in the
# environment. The .invalid placeholders make steps fail visibly, not
# reach anyone.
export SLACK_OPS_WEBHOOK ?= https://hooks.slack.invalid/services/dev
export ALO_API_KEY ?= dev-alo-api-key
export TICKETS_URL ?= https://tickets.invalid
export TICKETS_TOKEN ?= dev-tickets-token

run: build
	@mkdir -p $(DATA)
	@echo "alorules: development signing secret: $(DEV_SECRET)"
	@echo "alorules: try  ALO_SIGNING_SECRET=$(DEV_SECRET) $(BIN) send --challenge http://127.0.0.1:8080/webhooks/alo"
	ALO_SIGNING_SECRET=$(DEV_SECRET) $(BIN) serve --rules rules.example.yaml --db $(DATA)/alorules.db \
		--addr 127.0.0.1:8080 --admin-addr 127.0.0.1:8081

test:
	$(GO) test -race -count=1 -timeout 20m ./...

# Go benchmarks of the hot paths, then the ingest load benchmark over
# loopback (signed, distinct events at concurrency 1, 16 and 64: events/s,
# p50/p99 acknowledgement latency) and event-to-first-step latency.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./alo ./store ./engine ./actions
	$(GO) test -run '^$$' -bench 'Ingest|EventToFirstStep' -benchtime 3000x -count 1 ./cmd/alorules

# UI pages with 1,000,000 stored events (seeding takes a minute or two).
bench-ui:
	$(GO) test -run '^$$' -bench UIPages -benchtime 100x -count 1 -timeout 30m ./web

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# The long half of the proof suite (README.md, "Guarantees"):
# the load and crash tests at full length. make test runs them short.
# No -race here: the figures are for the build that ships; make test
# runs the same code under the race detector.
soak:
	ALORULES_SOAK=1 $(GO) test -count=1 -timeout 25m -v -run '^(TestLoad|TestCrashRecovery)$$' ./cmd/alorules

# Each fuzz target for a fixed number of inputs (about 15 s each here): the
# webhook body check, the whole webhook handler with signatures, the
# verifier, the JSON decoder the rules see, and the template renderer
# (Slack text; URL path, query, header and json: destinations). Counts, not durations: with a -fuzztime
# duration, Go 1.26's coordinator can fail a clean run with "context
# deadline exceeded" at the deadline (go.dev/issue/75804, fixed in 1.27).
# Minimizing each new interesting input may take a minute by default,
# which would eat a short run; a failing input is still saved in
# testdata/fuzz.
FUZZ_TARGETS := ./web:FuzzCheckBody:50000 ./web:FuzzIngest:30000 ./alo:FuzzVerify:100000 ./engine:FuzzDecodeJSON:50000 ./engine:FuzzSlackText:50000 ./engine:FuzzTemplateDestinations:50000
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; n=$${rest#*:}; \
		echo "fuzz: $$fn in $$pkg, $$n inputs"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $${n}x -fuzzminimizetime 2s -timeout 5m $$pkg; \
	done

# govulncheck against an offline vulnerability database; findings must be
# fixed or listed with a reason in .ci/vuln-allow.txt.
vulncheck:
	.ci/vulncheck

clean:
	rm -rf bin
