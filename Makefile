# calico-libnetwork: Calico-style layer-3 networking for plain Docker hosts.
# `sudo make run` and `sudo make test` do all the set-up on a fresh machine.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE     ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
PKG      := github.com/calico-libnetwork/calico-libnetwork
LDFLAGS  := -s -w -X $(PKG)/api.Version=$(VERSION) -X $(PKG)/api.GitCommit=$(COMMIT) -X $(PKG)/plugin.Date=$(DATE)
BINS     := calico-libnetwork $(notdir $(wildcard cmd/calicoctl))
DATA_DIR ?= /var/lib/calico

.PHONY: all build test unit e2e run bench lint clean deps fuzz soak

all: build

build:
	@mkdir -p bin
	@for b in $(BINS); do \
		echo "building bin/$$b"; \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/$$b ./cmd/$$b || exit 1; \
	done

deps:
	scripts/install-deps.sh

# Everything: unit tests (real etcd, real network namespaces) and the
# end-to-end suite against a real dockerd. Needs root.
test:
	scripts/test.sh

unit:
	CALICO_REQUIRE_ROOT_TESTS=1 $(GO) test -race -count=1 ./...

e2e: build
	scripts/ensure-docker.sh
	CALICO_E2E_REQUIRED=1 $(GO) test -tags e2e -p 1 -count=1 -v -timeout 45m ./e2e/...

# Installs and starts Docker's engine if needed, then runs the daemon in the
# foreground on the embedded datastore (set ETCD_ENDPOINTS for a cluster).
run: build
	scripts/install-deps.sh docker
	scripts/ensure-docker.sh
	bin/calico-libnetwork --data-dir $(DATA_DIR)

bench: build
	scripts/bench.sh

# Every fuzz target for FUZZTIME (default 10s) each; FUZZ=FuzzXxx for one.
fuzz:
	scripts/fuzz.sh

# The long fault-injection history test (RELIABILITY.md): SOAK_OPS IPAM calls
# by 8 allocator processes against a 3-member etcd cluster whose members are
# killed, isolated and paused throughout. Needs root; `make test` runs a
# 20,000-call version.
SOAK_OPS ?= 100000
soak:
	scripts/install-deps.sh
	CALICO_REQUIRE_ROOT_TESTS=1 CALICO_HISTORY=1 HISTORY_OPS=$(SOAK_OPS) HISTORY_QUIET=30s \
		$(GO) test -count=1 -v -run '^TestHistory$$' -timeout 90m ./ipam/history/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...

clean:
	rm -rf bin dist build

# ---- Image, managed plugin, releases --------------------------------------
# README: "Managed plugin (docker plugin install)" and "systemd". DOCKER_HOST
# picks the engine the image and plugin are built in.
DOCKER      ?= docker
IMAGE       ?= calico-libnetwork
PLUGIN      ?= calico-libnetwork:$(VERSION)
PLUGIN_REPO ?= calico-libnetwork
PLUGIN_TAGS ?= $(VERSION) latest
REGISTRY    ?=
ARCHES      ?= amd64 arm64

.PHONY: image image-rootfs plugin plugin-rootfs plugin-push release e2e-plugin

# build/image/rootfs: the static binaries, the iptables wrapper and this
# machine's iptables with its libraries (scripts/image-rootfs.sh).
image-rootfs: build
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o build/image/iptables-wrapper ./deploy/iptables-wrapper
	scripts/image-rootfs.sh build/image/rootfs bin build/image/iptables-wrapper

# The image, FROM scratch, from what `make build` made: no registry needed.
image: image-rootfs
	$(DOCKER) build --target prebuilt --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
		-t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

# build/plugin: the image's file system and config.json, as docker plugin create takes them.
plugin-rootfs: image
	scripts/plugin-build.sh rootfs $(IMAGE):$(VERSION) build/plugin $(VERSION)

# The managed plugin, created in the engine as $(PLUGIN) (disabled). On a
# single host without a registry: make plugin PLUGIN=calico && docker plugin enable calico
plugin: plugin-rootfs
	scripts/plugin-build.sh create build/plugin $(PLUGIN)

# Pushes the plugin as $(REGISTRY)/$(PLUGIN_REPO):TAG for each of $(PLUGIN_TAGS).
plugin-push: plugin-rootfs
	@test -n "$(REGISTRY)" || { echo "usage: make plugin-push REGISTRY=host:port[/path]" >&2; exit 2; }
	@for tag in $(PLUGIN_TAGS); do \
		scripts/plugin-build.sh push build/plugin $(REGISTRY)/$(PLUGIN_REPO):$$tag || exit 1; \
	done

# dist/: static binaries for $(ARCHES) with version, commit and date in
# --version, one tarball per architecture (binaries, systemd unit, env file,
# config.json) and SHA256SUMS.
release:
	@rm -rf dist && mkdir -p dist
	@set -e; for arch in $(ARCHES); do \
		d=dist/calico-libnetwork-$(VERSION)-linux-$$arch; mkdir -p $$d; \
		for b in $(BINS); do \
			echo "building $$d/$$b"; \
			CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$d/$$b ./cmd/$$b; \
		done; \
		cp deploy/calico-libnetwork.service deploy/calico-libnetwork.env config.json README.md $$d/; \
		tar -C dist -czf $$d.tar.gz $$(basename $$d); \
		rm -rf $$d; \
	done
	cd dist && sha256sum *.tar.gz > SHA256SUMS
	@cat dist/SHA256SUMS

# The managed-plugin end-to-end test alone (a private dockerd and registry;
# see e2e/plugin). `make e2e` runs only ./e2e/.
e2e-plugin:
	CALICO_E2E_REQUIRED=1 $(GO) test -tags e2e -count=1 -v -timeout 30m ./e2e/plugin/
