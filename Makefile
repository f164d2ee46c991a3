# kiln: a local machine-image service. `make help` lists the targets.

GO        ?= go
TESTFLAGS ?=
BENCHFLAGS ?= -benchtime=20x
FUZZTIME  ?= 20s
PREFIX    ?= /usr/local
DESTDIR   ?=
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
GUEST     := testdata/guest/out
DEBIAN    := testdata/guest-debian/out
# ./... leaves out testdata/; the guest's own test is named beside it.
PKGS      := ./... ./testdata/guest
SUDO      := $(if $(filter 0,$(shell id -u)),,sudo)

# Debian packages kiln and its tests need. They are installed with services kept from
# starting (policy-rc.d): docker-registry's would listen on every interface, and the tests
# start registries of their own on loopback.
PACKAGES := qemu-system-x86 qemu-utils busybox-static e2fsprogs cpio gzip util-linux dpkg apt systemd passwd \
	mmdebstrap syslinux syslinux-common mtools dosfstools fdisk openssh-client openssl qemu-guest-agent nftables iproute2 \
	docker-registry skopeo apache2-utils awscli python3-boto3 python3-botocore ovmf swtpm swtpm-tools sbsigntool

.PHONY: help deps build docs guest guest-debian test test-race test-short bench fuzz lint check-tree run install clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

deps: ## install the Debian packages kiln needs (idempotent, quiet when all are there)
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		norc=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null && $(SUDO) chmod 755 /usr/sbin/policy-rc.d && norc=1; \
		fi; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		status=$$?; \
		if [ -n "$$norc" ]; then $(SUDO) rm -f /usr/sbin/policy-rc.d; fi; \
		case " $$missing " in *" docker-registry "*) \
			if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now docker-registry.service >/dev/null 2>&1 || true; fi;; \
		esac; \
		exit $$status; \
	fi

build: ## build bin/kilnd and bin/kiln
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/kilnd ./cmd/kiln

docs: ## make docs/cli.md (the command reference) again from kiln's commands; a test fails when it drifts
	KILN_UPDATE_DOCS=1 $(GO) test -count=1 -run '^TestCLIReference$$' ./cmd/kiln

guest: deps $(GUEST)/.built ## build the test guest (testdata/guest/out)

$(GUEST)/.built: testdata/guest/build.sh testdata/guest/initrd-init $(shell find testdata/guest/rootfs -type f)
	sh testdata/guest/build.sh $(GUEST)
	touch $@

guest-debian: deps $(DEBIAN)/.built ## build the Debian test guest (testdata/guest-debian/out/disk.qcow2)

$(DEBIAN)/.built: testdata/guest-debian/build.sh testdata/guest-debian/syslinux.cfg testdata/guest-debian/grub.cfg $(shell find testdata/guest-debian/rootfs -type f)
	$(SUDO) sh testdata/guest-debian/build.sh $(DEBIAN)
	$(SUDO) chown -R $$(id -u):$$(id -g) $(DEBIAN)
	touch $@

test: deps guest guest-debian ## run every test, the ones that boot the guest included
# -timeout is the backstop of a test that hangs, not a target: the daemon package takes
# 13-17 minutes on a 2-core machine, and a slower runner must not be killed by it.
	$(GO) test -timeout 40m $(TESTFLAGS) $(PKGS)

test-race: deps guest guest-debian ## run every test under the race detector, kilnd and kiln built with -race too (slow)
	$(GO) test -race -timeout 40m $(TESTFLAGS) $(PKGS)

test-short: ## the quick loop: no guests, no long tests
	$(GO) test -short $(TESTFLAGS) $(PKGS)

# BenchmarkPushPull moves 1 GiB each way per iteration: it runs a few times, not BENCHFLAGS'.
bench: deps guest guest-debian ## run the benchmarks (figures for the issues' notes)
	$(GO) test -run '^$$' -bench . -skip '^BenchmarkPushPull$$' $(BENCHFLAGS) -timeout 30m ./...
	$(GO) test -run '^$$' -bench '^BenchmarkPushPull$$' -benchtime=2x -timeout 30m ./daemon/

fuzz: ## run each fuzz target for FUZZTIME
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

lint: check-tree ## go vet, staticcheck and check-tree
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.7.0 $(PKGS)

check-tree: ## refuse a tracked binary, or a tracked file over 1 MiB outside testdata/
	@bad=$$(git ls-files | while IFS= read -r f; do \
		case "$$f" in testdata/*|*/testdata/*) continue ;; esac; \
		[ -f "$$f" ] && [ ! -L "$$f" ] || continue; \
		if [ "$$(stat -c %s "$$f")" -gt 1048576 ]; then echo "  $$f: over 1 MiB"; \
		elif head -c 8192 "$$f" | od -An -tx1 | grep -q ' 00'; then echo "  $$f: binary (NUL bytes)"; fi; \
	done); \
	if [ -n "$$bad" ]; then \
		echo "the repository holds source only; remove these (git rm --cached FILE) and ignore them:"; \
		echo "$$bad"; exit 1; \
	fi

run: deps build guest guest-debian ## start kilnd with the default root and a sample image (Ctrl-C stops it)
	@set -e; ./bin/kilnd & pid=$$!; trap 'kill $$pid 2>/dev/null' INT TERM EXIT; \
	until ./bin/kiln info >/dev/null 2>&1; do kill -0 $$pid 2>/dev/null || exit 1; sleep 0.1; done; \
	./bin/kiln image inspect kiln-guest -q >/dev/null 2>&1 || \
		./bin/kiln image register kiln-guest --wait -q --description "kiln test guest (busybox on Debian's cloud kernel)" \
			--disk $(CURDIR)/$(GUEST)/root.qcow2 --kernel $(CURDIR)/$(GUEST)/vmlinuz --initrd $(CURDIR)/$(GUEST)/initrd.img \
			--cmdline "console=ttyS0 root=/dev/vda no_timer_check"; \
	./bin/kiln image inspect debian-12 -q >/dev/null 2>&1 || \
		./bin/kiln image register debian-12 --wait -q --description "Debian 12 (bookworm) with cloud-init, built by testdata/guest-debian" \
			--disk $(CURDIR)/$(DEBIAN)/disk.qcow2 --ssh-user debian; \
	./bin/kiln image ls; echo "kilnd is running; try: ./bin/kiln image ls  (Ctrl-C stops it)"; \
	wait $$pid

UNITDIR     ?= $(PREFIX)/lib/systemd/system
USERUNITDIR ?= $(PREFIX)/lib/systemd/user
DOCDIR      ?= $(PREFIX)/share/doc/kiln
SUBST        = sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@DOCDIR@|$(DOCDIR)|g'

install: build ## install binaries, systemd units, tmpfiles and sysusers entries, README and docs/ under DESTDIR/PREFIX
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(USERUNITDIR) $(DESTDIR)$(DOCDIR) \
		$(DESTDIR)$(PREFIX)/lib/tmpfiles.d $(DESTDIR)$(PREFIX)/lib/sysusers.d
	install -m 0755 bin/kilnd bin/kiln $(DESTDIR)$(PREFIX)/bin/
	for u in kilnd.service kilnd.socket kiln.slice kiln-instance@.service; do \
		$(SUBST) systemd/units/$$u > $(DESTDIR)$(UNITDIR)/$$u; \
		$(SUBST) systemd/units/user/$$u > $(DESTDIR)$(USERUNITDIR)/$$u; \
	done
	install -m 0644 systemd/units/kiln.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/kiln.conf
	install -m 0644 systemd/units/kiln.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/kiln.conf
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(DOCDIR)/docs
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/docs/

clean: ## remove build output and the test guest
	rm -rf bin $(GUEST) $(DEBIAN)
