# mcsession: `make test` runs every test against real memcached processes;
# `make deps` installs memcached on Debian when it is missing. Every target
# prints a "==> target: step" line before each of its steps.
GO ?= go
# BIN is where `make demo` builds the demo (ignored by git).
BIN ?= bin
# DEMO_FLAGS are passed to the demo, e.g. DEMO_FLAGS="-listen 127.0.0.1:8001";
# ARGS is an alias (after DEMO_FLAGS), e.g. `make demo ARGS=-sticky`.
DEMO_FLAGS ?=
ARGS ?=
# FUZZTIME is how long `make fuzz` runs each fuzz target (a duration, or
# an exec count such as 1000000x).
FUZZTIME ?= 5s

.PHONY: deps test vet demo bench fuzz

deps:
	@echo "==> deps: check that memcached is installed"
	@command -v memcached >/dev/null 2>&1 || { \
		echo "==> deps: memcached not found: installing it with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y memcached; }
	@memcached -V

vet:
	@echo "==> vet: $(GO) vet ./..."
	@$(GO) vet ./...

# test also vets and tests the examples (the app, the demo, the quick start),
# bench and router-example modules (each with its own go.mod, so that their
# dependencies stay out of the library's), so that a change to the library
# cannot silently break them, and ends with a short run of every fuzz target.
test: deps vet
	@echo "==> test: $(GO) test -race -count=1 ./... (against real memcached processes)"
	@$(GO) test -race -count=1 ./...
	@echo "==> test: cd bench && $(GO) vet ./... && $(GO) test -count=1 ./..."
	@cd bench && $(GO) vet ./... && $(GO) test -count=1 ./...
	@echo "==> test: cd examples && $(GO) vet ./... && $(GO) test -race -count=1 ./... (the app, the demo, the quick start)"
	@cd examples && $(GO) vet ./... && $(GO) test -race -count=1 ./...
	@echo "==> test: cd examples/routers && $(GO) vet ./... && $(GO) test -race -count=1 ./... (chi, gorilla/mux)"
	@cd examples/routers && $(GO) vet ./... && $(GO) test -race -count=1 ./...
	@echo "==> test: cd extra/mcsessionprom && $(GO) vet ./... && $(GO) test -race -count=1 ./... (Prometheus collector)"
	@cd extra/mcsessionprom && $(GO) vet ./... && $(GO) test -race -count=1 ./...
	@echo "==> test: cd extra/mcsessionotel && $(GO) vet ./... && $(GO) test -race -count=1 ./... (OpenTelemetry instruments)"
	@cd extra/mcsessionotel && $(GO) vet ./... && $(GO) test -race -count=1 ./...
	@$(MAKE) --no-print-directory fuzz FUZZTIME=3s

# fuzz runs each fuzz target for FUZZTIME (`make test` runs them for 3s):
# the session cookie through the middleware (over real memcached), the
# envelope decoder and the meta answer parser. Their seeds are in each
# package's testdata/fuzz/<FuzzName>; what the fuzzer finds is kept in Go's
# cache, except a failing input, which go test writes to testdata/fuzz
# (fix the bug, then commit it as a seed).
fuzz: deps
	@echo "==> fuzz: $(GO) test -run '^$$' -fuzz '^FuzzSessionCookie$$' -fuzztime $(FUZZTIME) ./httpsession"
	@$(GO) test -run '^$$' -fuzz '^FuzzSessionCookie$$' -fuzztime $(FUZZTIME) ./httpsession
	@echo "==> fuzz: $(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./codec"
	@$(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./codec
	@echo "==> fuzz: $(GO) test -run '^$$' -fuzz '^FuzzReadAnswers$$' -fuzztime $(FUZZTIME) ./internal/meta"
	@$(GO) test -run '^$$' -fuzz '^FuzzReadAnswers$$' -fuzztime $(FUZZTIME) ./internal/meta

# demo: 3 memcached nodes, 2 app servers and a round-robin proxy with a live
# page (prints its URL; Ctrl-C stops everything).
# `make demo ARGS=-sticky` (or DEMO_FLAGS=-sticky) is the sticky variant: the
# apps run with -sticky, the proxy pins each browser to one app server with a
# cookie (demo_route) and moves it to a running one when that server is down,
# and the page can stop (SIGTERM), kill (SIGKILL) and restart the app servers:
# kill yours and the session goes on from memcached on the other one. Add
# -sticky-trust or -async-backup to pass them on to the apps, e.g.
# `make demo ARGS="-sticky -async-backup"`; `bin/cluster -h` lists all flags.
# The demo is built, then run as make's own child, not with `go run`: `go run`
# exits with status 1 whenever it gets a SIGINT, so make would report an error
# for the Ctrl-C that is the normal end of the demo; the demo itself exits
# with status 0 once it has stopped everything it started.
demo: deps
	@echo "==> demo: cd examples && $(GO) build -o $(abspath $(BIN))/cluster ./cluster"
	@cd examples && $(GO) build -o $(abspath $(BIN))/cluster ./cluster
	@echo "==> demo: $(strip $(BIN)/cluster $(DEMO_FLAGS) $(ARGS)) (Ctrl-C stops everything)"
	@$(BIN)/cluster $(DEMO_FLAGS) $(ARGS)

# bench: mcsession next to the floor (raw gomemcache) and peer libraries,
# side by side on 3 local memcached nodes; writes bench/out/results.{json,md,png}
# in under two minutes (see bench/README.md).
# Built, then run (not `go run`), so that a Ctrl-C ends it without make
# reporting an error, as for the demo.
bench: deps
	@echo "==> bench: cd bench && $(GO) build -o out/bench ."
	@cd bench && $(GO) build -o out/bench .
	@echo "==> bench: bench/out/bench -out out (about two minutes)"
	@cd bench && ./out/bench -out out
