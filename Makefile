# mcsession: `make test` runs every test against real memcached processes;
# `make deps` installs memcached on Debian when it is missing. Every target
# prints a "==> target: step" line before each of its steps.
GO ?= go
# Each module is vetted, tested and built against its own go.mod, as its
# users get it; the repository's go.work (which lets `go run ./examples/app`
# and the like work from the root) is for people, not for these targets.
export GOWORK := off
# BIN is where `make demo` builds the demo (ignored by git).
BIN ?= bin
# DEMO_FLAGS are passed to the demo, e.g. DEMO_FLAGS="-listen 127.0.0.1:8001";
# ARGS is an alias (after DEMO_FLAGS), e.g. `make demo ARGS=-sticky`.
DEMO_FLAGS ?=
ARGS ?=
# FUZZTIME is how long `make fuzz` runs each fuzz target (a duration, or
# an exec count such as 1000000x).
FUZZTIME ?= 5s
# DURATION is how long `make soak` keeps up its chaos (a Go duration);
# SOAK_FLAGS and FAULTS_FLAGS are further flags for the soak and the fault
# matrix, e.g. SOAK_FLAGS="-seed 42 -actions kill,restart,toxic".
DURATION ?= 5m
SOAK_FLAGS ?=
FAULTS_FLAGS ?=

.PHONY: deps test vet demo bench fuzz faults soak

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
	@echo "==> test: cd examples/chaos && $(GO) vet ./... && $(GO) test -race -count=1 ./... (short fault matrix and 30 s chaos soak)"
	@cd examples/chaos && $(GO) vet ./... && $(GO) test -race -count=1 ./...
	@$(MAKE) --no-print-directory fuzz FUZZTIME=3000x

# fuzz runs each fuzz target for FUZZTIME (`make test` runs 3000 execs of
# each: a count, not a duration, because Go 1.26's fuzzer can fail a
# duration-bounded run with "context deadline exceeded" at its end under
# load, golang/go#75804, fixed in Go 1.27):
# the session cookie through the middleware (over real memcached), the
# envelope decoder, the sealed-value opener (encryption at rest) and the
# meta answer parser. Their seeds are in each
# package's testdata/fuzz/<FuzzName>; what the fuzzer finds is kept in Go's
# cache, except a failing input, which go test writes to testdata/fuzz
# (fix the bug, then commit it as a seed).
fuzz: deps
	@echo "==> fuzz: $(GO) test -run '^$$' -fuzz '^FuzzSessionCookie$$' -fuzztime $(FUZZTIME) ./httpsession"
	@$(GO) test -run '^$$' -fuzz '^FuzzSessionCookie$$' -fuzztime $(FUZZTIME) ./httpsession
	@echo "==> fuzz: $(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./codec"
	@$(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./codec
	@echo "==> fuzz: $(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./codec"
	@$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./codec
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

# faults: the fault matrix (examples/chaos, its own module: toxiproxy stays
# out of the other go.mod files). For each toxic (latency 50 ms and 600 ms,
# blackhole, reset_peer, slow_close, 10 KB/s, slicer): 3 memcached nodes
# behind in-process toxiproxy proxies, 2 app servers, 16 clients; the toxic
# on the primary of a shared session for 6 s, then removed. Writes
# docs/faults-results.{md,json} and the table between the faults markers of
# README.md; about 3 minutes. Exits non-zero if a row lost an acknowledged
# update. Built, then run (not `go run`), so that Ctrl-C stops it cleanly.
faults: deps
	@echo "==> faults: cd examples/chaos && $(GO) build -o $(abspath $(BIN))/faults ./cmd/faults"
	@cd examples/chaos && $(GO) build -o $(abspath $(BIN))/faults ./cmd/faults
	@echo "==> faults: $(strip $(BIN)/faults -out docs -readme README.md $(FAULTS_FLAGS)) (7 rows, about 3 minutes)"
	@$(BIN)/faults -out docs -readme README.md $(FAULTS_FLAGS)

# soak: the chaos soak (examples/chaos): 3 nodes, 2 app servers, 32 clients,
# a random kill / SIGSTOP+SIGCONT / restart-empty / toxic every 2-6 s for
# DURATION (default 5m; `make soak DURATION=30s`), seeded (the seed is
# printed; SOAK_FLAGS="-seed N" replays it). Prints a line every 10 s, then
# acknowledged against stored increments per session; exits non-zero on a
# lost acknowledged update.
soak: deps
	@echo "==> soak: cd examples/chaos && $(GO) build -o $(abspath $(BIN))/soak ./cmd/soak"
	@cd examples/chaos && $(GO) build -o $(abspath $(BIN))/soak ./cmd/soak
	@echo "==> soak: $(strip $(BIN)/soak -duration $(DURATION) $(SOAK_FLAGS))"
	@$(BIN)/soak -duration $(DURATION) $(SOAK_FLAGS)
