# mcsession: `make test` runs every test against real memcached processes;
# `make deps` installs memcached on Debian when it is missing.
GO ?= go

.PHONY: deps test vet demo bench

deps:
	@command -v memcached >/dev/null 2>&1 || { \
		echo "memcached not found: installing it with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y memcached; }
	@memcached -V

vet:
	$(GO) vet ./...

# test also vets and tests the bench module (its own go.mod), so that a
# change to the library cannot silently break `make bench`.
test: deps vet
	$(GO) test -race -count=1 ./...
	cd bench && $(GO) vet ./... && $(GO) test -count=1 ./...

# demo: 3 memcached nodes, 2 app servers and a round-robin proxy with a live
# page (prints its URL; Ctrl-C stops everything).
demo: deps
	$(GO) run ./examples/cluster

# bench: mcsession next to the floor (raw gomemcache) and peer libraries,
# side by side on 3 local memcached nodes; writes bench/out/results.{json,md,png}
# in under two minutes (see bench/README.md).
bench: deps
	cd bench && $(GO) run . -out out
