# Breakwater's two commands:
#   make run    runs Breakwater with the bundled config.yaml
#   make test   runs the whole test suite (what .ci/run runs)

GO        ?= go
GOBIN     := $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION := v0.8.2

# The release is the VERSION file; the commit says which build of it.
VERSION  := $(shell cat VERSION)
REVISION := $(shell rev=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { git diff --quiet HEAD || rev=$$rev-dirty; } && echo $$rev)
LDFLAGS  := -X main.version=$(VERSION) -X main.revision=$(REVISION)
# make build (or make image) TAGS=breakwater_nogcs,breakwater_noazure: a
# binary without the GCS and Azure storage drivers (smaller, and 21 MiB less
# resident without GCS's; docs/fleet.md).
TAGS     ?=

# make image: an OCI image layout in IMAGE_OUT, pushed to IMAGE_PUSH if set.
IMAGE_OUT       ?= dist/image
IMAGE_PUSH      ?=
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64

.PHONY: run build image test check unit fuzz e2e k6 bench tools

run:
	$(GO) run ./cmd/breakwater serve --config config.yaml

build:
	$(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/breakwater ./cmd/breakwater

# No Docker daemon: see build/image and docs/image.md.
image:
	$(GO) run ./build/image --out '$(IMAGE_OUT)' --version '$(VERSION)' --revision '$(REVISION)' \
		--platforms '$(IMAGE_PLATFORMS)' --tags '$(TAGS)' $(if $(IMAGE_PUSH),--push '$(IMAGE_PUSH)')

test: check unit fuzz e2e k6

# The build tags that leave the cloud storage drivers out: checked and
# tested too, so that such a build keeps compiling.
LEFT_OUT := breakwater_nogcs,breakwater_noazure

# Formatting, vet and staticcheck: cheap, so they run first.
check: tools
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...
	$(GO) vet -tags $(LEFT_OUT) ./objstore/ ./cmd/breakwater/
	$(GOBIN)/staticcheck -tags $(LEFT_OUT) ./objstore/

# The image build's test runs without the race detector: it is one
# sequential tool, and instrumented it spends minutes hashing and pushing
# a 50 MB binary (15 s without).
unit:
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v '/build/image$$')
	$(GO) test -count=1 -timeout 10m ./build/image/
	$(GO) test -count=1 -tags $(LEFT_OUT) -run '^(TestCloudDriversLeftOut|TestServeRefusesALeftOutDriver)$$' ./objstore/ ./cmd/breakwater/

# Arbitrary upstream answers through a real Breakwater, for a bounded time
# (the seed corpus also runs in unit).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzUpstreamAnswer$$' -fuzztime 30s ./proxy/

e2e:
	bash test/e2e/run.sh

# Each k6 script briefly against a local upstream and Breakwater, so they
# cannot rot (installs k6 with go install when missing).
k6:
	bash loadtest/k6/run.sh

# The side-by-side benchmark (Breakwater, distribution proxy, direct); see
# BENCHMARKS.md. Not part of make test: it measures, it does not assert.
bench:
	$(GO) run ./loadtest/bench

tools:
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
