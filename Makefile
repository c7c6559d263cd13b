# usernsd: build, install and uninstall like a system daemon. See README.md.
#   make                 build dist/ (needs "npm ci" first)
#   make install         PREFIX=/usr/local SYSCONFDIR=/etc DESTDIR= USERNSD_NODE=<the project's Node 24>
#   make uninstall       the same variables: removes exactly what install placed (refused while its agent runs)
#   make deb             usernsd_VERSION_ARCH.deb (DEB_VERSION=, DEB_OUTDIR=, DEB_COMPRESS=xz|gzip|zstd|none, DEB_COMPRESS_LEVEL=0-9)
# Installing again over a running agent replaces each file by rename (never writing a running binary);
# a failed install puts back every file it replaced.
# Installed: PREFIX/lib/usernsd (the agent, its production dependencies and its Node),
# PREFIX/sbin/usernsd, PREFIX/bin/usernsctl, /sbin/mount.usernsd (MOUNTHELPERDIR: /sbin for a
# PREFIX under /usr, where mount(8) looks, else PREFIX/sbin), PREFIX/share/man, PREFIX/lib/systemd/system,
# PREFIX/lib/tmpfiles.d, SYSCONFDIR/init.d, SYSCONFDIR/request-key.d, and SYSCONFDIR/usernsd.conf
# and userns.d/*.conf.example unless they exist (an admin's configuration is never overwritten).

PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR ?=
# Not NODE: npm sets that to the Node running npm itself (Debian's is 20, too old).
USERNSD_NODE ?= $(CURDIR)/node_modules/node/bin/node
RUN := $(CURDIR)/node_modules/.bin/node

export PREFIX SYSCONFDIR DESTDIR USERNSD_NODE

.PHONY: all install uninstall check deb

all: dist/agent/main.js

$(RUN):
	@echo 'node_modules is missing: run "npm ci" first' >&2; exit 1

dist/agent/main.js: $(RUN) $(wildcard agent/*.ts agent/*/*.ts config/*.ts native/*.c native/*.h) package.json scripts/bundle.js scripts/build-native.js
	npm run build

install: all
	$(RUN) scripts/install.js install

uninstall:
	$(RUN) scripts/install.js uninstall

deb: all
	$(RUN) scripts/deb.js

check:
	npm test
