# Breakwater's two commands:
#   make run    runs Breakwater with the bundled config.yaml
#   make test   runs the whole test suite (what .ci/run runs)

GO        ?= go
GOBIN     := $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION := v0.8.2

.PHONY: run build test check unit e2e tools

run:
	$(GO) run ./cmd/breakwater serve --config config.yaml

build:
	$(GO) build -o bin/breakwater ./cmd/breakwater

test: check unit e2e

# Formatting, vet and staticcheck: cheap, so they run first.
check: tools
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

e2e:
	bash test/e2e/run.sh

tools:
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
