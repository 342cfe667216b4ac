# mcsession: `make test` runs every test against real memcached processes;
# `make deps` installs memcached on Debian when it is missing.
GO ?= go

.PHONY: deps test vet

deps:
	@command -v memcached >/dev/null 2>&1 || { \
		echo "memcached not found: installing it with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y memcached; }
	@memcached -V

vet:
	$(GO) vet ./...

test: deps vet
	$(GO) test -race -count=1 ./...
