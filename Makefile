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

.PHONY: run build test bench lint fuzz soak clean

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

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./store ./engine ./actions ./web
	$(GO) run ./cmd/alorules loadtest --duration 5s --concurrency 1,16,64

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

clean:
	rm -rf bin
