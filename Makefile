SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

# Every module of the workspace, as package patterns: `go test ./...` at a go.work
# root with no go.mod of its own matches nothing.
PKGS = $(shell go list -m -f '{{.Dir}}/...')
MODDIRS = $(shell go list -m -f '{{.Dir}}')

BIN := $(CURDIR)/bin
TOOLS := $(BIN)/tools
BUF := $(TOOLS)/buf
STATICCHECK := $(TOOLS)/staticcheck
TEST_TIMEOUT ?= 9m
GOTESTFLAGS ?=
# Privilege for installing test dependencies: empty as root, sudo otherwise.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build run node-deps docs proto proto-check proto-breaking lint tidy test test-race test-deps fuzz bench bench-soak tools vuln clean

all: build

## build: compile bin/authz, bin/mcp-gateway, bin/devauth, the load tool's baseline bin/mcp-floor and the example bin/identity-upstream
build:
	go build -o $(BIN)/ \
		./services/authz/cmd/authz \
		./services/mcp-gateway/cmd/mcp-gateway \
		./services/mcp-gateway/cmd/mcp-floor \
		./services/devauth/cmd/devauth \
		./examples/identity-upstream

# UPSTREAMS_FILE (from the command line, the environment or .env) makes `make run`
# front upstream MCP servers; examples/upstreams.yaml runs server-everything from
# e2e/ts/node_modules, so the npm packages are installed first.
UPSTREAMS_FILE ?=
RUN_NEEDS_NODE := $(if $(or $(UPSTREAMS_FILE),$(shell grep -s '^UPSTREAMS_FILE=.' .env)),node-deps)

## run: build and start devauth, authz and the gateway locally (and the upstreams of UPSTREAMS_FILE); Ctrl-C stops them
run: build $(RUN_NEEDS_NODE)
	scripts/run-stack.sh

## docs: regenerate docs/configuration.md and .env.example from the variables the binaries declare
docs:
	go run ./internal/envdoc/cmd/envdoc

## tools: buf, its protoc plugins and staticcheck at the versions pinned in tools/go.mod
tools: $(BUF)
$(BUF): tools/go.mod tools/go.sum
	cd tools && GOWORK=off go build -o $(TOOLS)/ \
		github.com/bufbuild/buf/cmd/buf \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc \
		honnef.co/go/tools/cmd/staticcheck

## proto: format, lint and regenerate the Go code in gen/
proto: tools
	$(BUF) format -w
	$(BUF) lint
	$(BUF) generate

## proto-check: fail when proto/ is unformatted or gen/ is stale
proto-check: proto
	@if [ -n "$$(git status --porcelain -- proto gen)" ]; then \
		git status --porcelain -- proto gen; git diff --stat -- proto gen; \
		echo "generated code is stale: run 'make proto' and commit the result" >&2; exit 1; \
	fi

## proto-breaking: buf breaking over the history: every commit of the last PROTO_BREAKING_DEPTH (100) that changed proto/, against its parent, and uncommitted changes against HEAD
PROTO_BREAKING_DEPTH ?= 100
proto-breaking: tools
	BUF=$(BUF) PROTO_BREAKING_DEPTH=$(PROTO_BREAKING_DEPTH) scripts/proto-breaking.sh

## lint: buf lint, gofmt, go vet and staticcheck over every module
lint: tools
	$(BUF) lint
	@unformatted=$$(gofmt -l $(MODDIRS) | grep -v '\.pb\.go$$' || true); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:" $$unformatted >&2; exit 1; fi
	go vet $(PKGS)
	$(STATICCHECK) $(PKGS)

## tidy: go work sync, then go mod tidy in every module (tools/ too), as e2e's TestModulesAreTidy and TestModulesBuildWhatTheWorkspaceTests expect
tidy:
	go work sync
	@for d in $(MODDIRS) $(CURDIR)/tools; do echo "go mod tidy in $$d"; (cd $$d && go mod tidy); done

## test-deps: install what the tests need (redis-server, redis-sentinel, python3-jwt, node and the npm packages of e2e/ts) when it is missing
test-deps:
	@if ! command -v redis-server >/dev/null; then \
		echo "installing redis-server"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	fi
	@redis-server --version
	@if ! command -v redis-sentinel >/dev/null; then \
		echo "installing redis-sentinel"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-sentinel >/dev/null; \
	fi
	@if ! /usr/bin/python3 -c 'import jwt, cryptography' 2>/dev/null; then \
		echo "installing python3-jwt (docs/federation.md's Python snippet is tested)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-jwt python3-cryptography >/dev/null; \
	fi
	@$(MAKE) --no-print-directory node-deps

## node-deps: node and npm when missing, and e2e/ts's npm packages from its lockfile (the TypeScript SDK client, server-everything)
node-deps:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		echo "installing nodejs and npm"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	fi
	@[ -f e2e/ts/node_modules/@modelcontextprotocol/sdk/package.json ] && \
		[ -f e2e/ts/node_modules/@modelcontextprotocol/server-everything/package.json ] && \
		[ -f e2e/ts/node_modules/jose/package.json ] || \
		(cd e2e/ts && npm ci --no-audit --no-fund --loglevel=error)

## test: every test of every module, against real Redis, gRPC and HTTP on loopback
test: test-deps build
	MCPAUTHZ_BIN_DIR=$(BIN) go test -count=1 -timeout $(TEST_TIMEOUT) $(GOTESTFLAGS) $(PKGS)

## test-race: the same with the race detector
test-race: test-deps build
	MCPAUTHZ_BIN_DIR=$(BIN) go test -race -count=1 -timeout 20m $(GOTESTFLAGS) $(PKGS)

## fuzz: every fuzz target of the workspace for FUZZTIME (default 5s) each
FUZZTIME ?= 5s
fuzz: test-deps
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

## bench: Go benchmarks of every module, then the load tool over the real stack (~10 min); results in BENCH_DIR
BENCH_DIR ?= bench/results/$(shell date -u +%F)-make-bench
bench: test-deps build
	mkdir -p $(BENCH_DIR)
	MCPAUTHZ_BIN_DIR=$(BIN) go test -run '^$$' -bench . -benchmem -count=1 -timeout 15m $(PKGS) | tee $(BENCH_DIR)/gobench.txt
	go build -o $(BIN)/mcpload ./bench/cmd/mcpload
	$(BIN)/mcpload -bin $(BIN) -out $(BENCH_DIR)
	$(BIN)/mcpload -bin $(BIN) -as-latency 30ms -scenarios warm,cold,stampede -out $(BENCH_DIR)/as30ms
	$(BIN)/mcpload -bin $(BIN) -protocol 2025-06-18 -scenarios warm -out $(BENCH_DIR)/mcp2025-06-18
	$(BIN)/mcpload -bin $(BIN) -gateway-env DECISION_CACHE_TTL=0 -as-latency 0,30ms -scenarios warm,two-replicas,federated -out $(BENCH_DIR)/no-decision-cache

## bench-soak: 10 minutes of churning load, sampling gateway and authz RSS; results in BENCH_DIR/soak
bench-soak: build
	go build -o $(BIN)/mcpload ./bench/cmd/mcpload
	$(BIN)/mcpload -bin $(BIN) -scenarios soak -soak-duration 10m -soak-clients 2 -out $(BENCH_DIR)/soak

## vuln: govulncheck over every module (needs its database, which these machines cannot reach)
vuln:
	@status=0; for d in $(MODDIRS); do echo "govulncheck $$d"; \
		(cd $$d && GOWORK=off go run golang.org/x/vuln/cmd/govulncheck@v1.9.0 ./...) || status=1; \
	done; exit $$status

clean:
	rm -rf $(BIN)
