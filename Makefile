# fanoutd: GNU make, pkg-config, nothing else. `make` builds ./fanoutd;
# `make test` builds an ASan+UBSan variant and runs every test against it.

PKGS     := libevent libevent_openssl openssl jansson libsystemd zlib libnghttp2
CC       ?= cc
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wwrite-strings -Wcast-qual -Wpointer-arith
CFLAGS   ?= -O2 -g
# CPPFLAGS, CFLAGS and LDFLAGS from the environment are honoured (the Debian
# build passes dpkg-buildflags' hardening); WARN comes after CFLAGS so that
# their -Wformat cannot lower our -Wformat=2.
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(CPPFLAGS) $(CFLAGS) $(WARN) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS     = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
PYTEST   := /usr/bin/python3 -m pytest
PREFIX   ?= /usr/local

SRCS     := $(wildcard daemon/*.c)
LIB_SRCS := $(filter-out daemon/main.c,$(SRCS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)

# Two variants share one rule set: build/rel (shipped) and build/asan (tests).
REL_OBJS  := $(LIB_SRCS:daemon/%.c=build/rel/%.o)
ASAN_OBJS := $(LIB_SRCS:daemon/%.c=build/asan/%.o)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=build/asan/%)

.PHONY: all deps test-deps run test unit integration asan clean bench \
        install uninstall package package-test modgraph fuzz fuzz-smoke
all: fanoutd fanout

deps:
	@sh scripts/deps.sh
test-deps:
	@sh scripts/deps.sh test

build/rel/%.o: daemon/%.c daemon/*.h | build/rel
	$(CC) $(ALL_CFLAGS) -c -o $@ $<
build/asan/%.o: daemon/%.c daemon/*.h | build/asan
	$(CC) $(ALL_CFLAGS) $(SAN) -O1 -c -o $@ $<
build/rel build/asan build/cli build/cli-asan:
	@mkdir -p $@

# The fanout command: cli/, with the daemon's HTTP/1.1 reader.
build/cli/%.o: cli/%.c cli/*.h daemon/*.h | build/cli
	$(CC) $(ALL_CFLAGS) -iquote daemon -c -o $@ $<
build/cli-asan/%.o: cli/%.c cli/*.h daemon/*.h | build/cli-asan
	$(CC) $(ALL_CFLAGS) $(SAN) -O1 -iquote daemon -c -o $@ $<
fanout: build/cli/fanout.o build/cli/jscan.o build/rel/h1.o
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)
build/asan/fanout: build/cli-asan/fanout.o build/cli-asan/jscan.o build/asan/h1.o
	$(CC) $(ALL_CFLAGS) $(SAN) -o $@ $^ $(LIBS)

fanoutd: $(REL_OBJS) build/rel/main.o
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

build/asan/fanoutd: $(ASAN_OBJS) build/asan/main.o
	$(CC) $(ALL_CFLAGS) $(SAN) -o $@ $^ $(LIBS)

# Each unit test links only the modules it tests, listed here.
build/asan/test_%: tests/unit/test_%.c tests/unit/unit.h
	$(CC) $(ALL_CFLAGS) $(SAN) -iquote daemon -o $@ $< $(filter %.o,$^) $(LIBS)
build/asan/test_conf: build/asan/conf.o build/asan/policy.o build/asan/log.o
build/asan/test_policy: build/asan/policy.o build/asan/conf.o build/asan/log.o
build/asan/test_url: build/asan/url.o build/asan/log.o
build/asan/test_h1: build/asan/h1.o build/asan/log.o
build/asan/test_body: build/asan/body.o build/asan/log.o
build/asan/test_result: build/asan/result.o build/asan/jout.o build/asan/h1.o build/asan/util.o build/asan/log.o
build/asan/test_dnscache: build/asan/dnscache.o build/asan/map.o build/asan/metrics.o build/asan/util.o build/asan/log.o build/asan/conf.o build/asan/policy.o
# The engine's modules, each with what lies below it and nothing above.
POOL_DEPS := build/asan/pool.o build/asan/tls.o build/asan/url.o build/asan/map.o \
             build/asan/metrics.o build/asan/util.o build/asan/log.o
build/asan/test_pool: $(POOL_DEPS)
build/asan/test_sched: build/asan/sched.o build/asan/throttle.o build/asan/conf.o $(POOL_DEPS)
build/asan/test_throttle: build/asan/throttle.o
build/asan/test_bring: build/asan/bring.o build/asan/util.o build/asan/log.o
build/asan/test_h2: daemon/h2.c build/asan/h1.o build/asan/metrics.o build/asan/util.o build/asan/log.o
build/asan/test_wire: build/asan/wire.o build/asan/jout.o build/asan/url.o build/asan/util.o build/asan/log.o
build/asan/test_upstream: build/asan/upstream.o $(POOL_DEPS) build/asan/dnscache.o build/asan/h2.o \
                          build/asan/wire.o \
                          build/asan/policy.o build/asan/conf.o build/asan/h1.o \
                          build/asan/body.o build/asan/jout.o

# Fuzz targets (libFuzzer, clang): one per parser that faces the outside
# world, each checking properties beyond memory safety (see its opening
# comment); a property that fails aborts. `make fuzz` (and fuzz-smoke, which
# `make test` runs) first replays every input under fuzz/regress/TARGET/ --
# each crash ever found, kept as a regression test -- then runs each target
# for FUZZ_SECONDS from its seed corpus (fuzz/corpus/TARGET, copied: new
# inputs stay in build/), FUZZ_JOBS at once. A crash is left in
# build/fuzz/artifacts/; once fixed, move it to fuzz/regress/TARGET/.
# FUZZ_SECONDS=0 only replays; `make fuzz-build` only builds. Longer, one target:
# build/fuzz/fuzz_h1 -max_total_time=600 build/fuzz/corpus-fuzz_h1
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -g -O1 $(WARN) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
FUZZ_SECONDS ?= 30
FUZZ_JOBS    ?= $(shell nproc 2>/dev/null || echo 1)
FUZZ_OPTS    := -timeout=10 -rss_limit_mb=1024
FUZZ_NAMES   := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_BINS    := $(FUZZ_NAMES:%=build/fuzz/%)
FUZZ_RUNS    := $(FUZZ_NAMES:%=fuzz-run-%)
.PHONY: fuzz-build fuzz-regress $(FUZZ_RUNS)

build/fuzz/%.o: daemon/%.c daemon/*.h | build/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ $<
build/fuzz/%.o: cli/%.c cli/*.h | build/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ $<
build/fuzz/fuzz_%: fuzz/fuzz_%.c
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer -iquote daemon -iquote cli -o $@ $< \
	    $(filter %.o,$^) $(LIBS)
build/fuzz/fuzz_h1: build/fuzz/h1.o build/fuzz/log.o
build/fuzz/fuzz_request: build/fuzz/h1.o build/fuzz/log.o
build/fuzz/fuzz_url: build/fuzz/url.o build/fuzz/log.o
build/fuzz/fuzz_intake: build/fuzz/intake.o build/fuzz/conf.o build/fuzz/url.o build/fuzz/policy.o \
                        build/fuzz/log.o
build/fuzz/fuzz_lines: build/fuzz/intake.o build/fuzz/conf.o build/fuzz/url.o build/fuzz/policy.o \
                       build/fuzz/wire.o build/fuzz/jout.o build/fuzz/h1.o build/fuzz/util.o \
                       build/fuzz/log.o
build/fuzz/fuzz_h2: build/fuzz/h2.o build/fuzz/h1.o build/fuzz/metrics.o build/fuzz/util.o \
                    build/fuzz/log.o
build/fuzz/fuzz_conf: build/fuzz/conf.o build/fuzz/policy.o build/fuzz/log.o
build/fuzz/fuzz_body: build/fuzz/body.o build/fuzz/log.o
build/fuzz/fuzz_jout: build/fuzz/jout.o
build/fuzz/fuzz_jscan: build/fuzz/jscan.o
build/fuzz build/fuzz/artifacts:
	@mkdir -p $@

fuzz-build: $(FUZZ_BINS)

# libFuzzer runs the files it is given once each: a crash, a leak or a
# failed property in any of them fails the build.
fuzz-regress: fuzz-build
	@set -e; for n in $(FUZZ_NAMES); do \
		files=$$(find fuzz/regress/$$n -type f 2>/dev/null | sort); \
		[ -n "$$files" ] || continue; \
		build/fuzz/$$n $(FUZZ_OPTS) $$files >build/fuzz/$$n.regress.log 2>&1 || \
		    { tail -40 build/fuzz/$$n.regress.log; echo "fuzz: $$n: a regression input fails"; exit 1; }; \
		echo "fuzz: $$n: $$(echo $$files | wc -w) regression input(s) pass"; \
	done

fuzz: fuzz-regress
	@if [ $(FUZZ_SECONDS) -gt 0 ]; then $(MAKE) --no-print-directory -k -j$(FUZZ_JOBS) $(FUZZ_RUNS); fi
# The name `make test` (and so CI) uses.
fuzz-smoke: fuzz

$(FUZZ_RUNS): fuzz-run-%: build/fuzz/% | build/fuzz/artifacts
	@rm -rf build/fuzz/corpus-$*; mkdir -p build/fuzz/corpus-$*; \
	if [ -d fuzz/corpus/$* ]; then cp -R fuzz/corpus/$*/. build/fuzz/corpus-$*/; fi; \
	build/fuzz/$* -max_total_time=$(FUZZ_SECONDS) $(FUZZ_OPTS) -print_final_stats=1 \
	    -artifact_prefix=build/fuzz/artifacts/$*- build/fuzz/corpus-$* >build/fuzz/$*.log 2>&1 || \
	    { tail -40 build/fuzz/$*.log; echo "fuzz: $*: failed; the input is in build/fuzz/artifacts/"; exit 1; }; \
	echo "fuzz: $*: $$(grep -o 'stat::number_of_executed_units: *[0-9]*' build/fuzz/$*.log | \
	    grep -o '[0-9]*$$') runs in $(FUZZ_SECONDS) s, corpus $$(ls build/fuzz/corpus-$* | wc -l), no crash"

asan: build/asan/fanoutd

run: deps
	@$(MAKE) --no-print-directory fanoutd
	./fanoutd -c conf/fanoutd.conf

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do ASAN_OPTIONS=detect_leaks=1 ./$$t; done

# Calls go only downward: a cycle among the modules fails the build's tests.
modgraph: fanoutd
	@scripts/modgraph build/rel >/dev/null

integration: build/asan/fanoutd build/asan/fanout
	FANOUTD_BIN=$(CURDIR)/build/asan/fanoutd FANOUT_BIN=$(CURDIR)/build/asan/fanout \
	    $(PYTEST) -q -p no:cacheprovider tests/integration

test: test-deps
	@$(MAKE) --no-print-directory fanoutd fanout modgraph unit fuzz-smoke integration package-test

bench:
	@sh scripts/deps.sh bench
	@$(MAKE) --no-print-directory fanoutd
	scripts/bench

clean:
	rm -rf build fanoutd fanout

# Installation. The Debian package uses PREFIX=/usr. The configuration, the
# units and the sysusers file go where the system looks for them, whatever
# PREFIX is. An existing configuration file is never overwritten.
SBINDIR        ?= $(PREFIX)/sbin
BINDIR         ?= $(PREFIX)/bin
MANDIR         ?= $(PREFIX)/share/man
SYSCONFDIR     ?= /etc
SYSTEMDUNITDIR ?= $(or $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null),/lib/systemd/system)
SYSUSERSDIR    ?= $(or $(shell pkg-config --variable=sysusersdir systemd 2>/dev/null),/usr/lib/sysusers.d)
UNITS          := fanoutd.service fanoutd.socket

# The units name /usr/sbin/fanoutd and /etc/fanoutd/; they are rewritten to
# SBINDIR and SYSCONFDIR on the way.
install: fanoutd fanout
	install -D -m 0755 fanoutd $(DESTDIR)$(SBINDIR)/fanoutd
	install -D -m 0755 fanout $(DESTDIR)$(BINDIR)/fanout
	@conf=$(DESTDIR)$(SYSCONFDIR)/fanoutd/fanoutd.conf; \
	if [ -e $$conf ]; then echo "install: keeping $$conf; the shipped one is conf/fanoutd.conf"; \
	else echo "install -D -m 0644 conf/fanoutd.conf $$conf"; install -D -m 0644 conf/fanoutd.conf $$conf; fi
	@set -e; for u in $(UNITS); do \
		dst=$(DESTDIR)$(SYSTEMDUNITDIR)/$$u; echo "install packaging/systemd/$$u $$dst"; \
		install -D -m 0644 /dev/null $$dst; \
		sed -e 's|/usr/sbin/fanoutd|$(SBINDIR)/fanoutd|g' -e 's|/etc/fanoutd/|$(SYSCONFDIR)/fanoutd/|g' \
		    packaging/systemd/$$u >$$dst; \
	done
	install -D -m 0644 packaging/systemd/fanoutd.sysusers $(DESTDIR)$(SYSUSERSDIR)/fanoutd.conf
	install -D -m 0644 doc/fanoutd.8 $(DESTDIR)$(MANDIR)/man8/fanoutd.8
	install -D -m 0644 doc/fanoutd.conf.5 $(DESTDIR)$(MANDIR)/man5/fanoutd.conf.5
	install -D -m 0644 doc/fanout.1 $(DESTDIR)$(MANDIR)/man1/fanout.1

# Leaves the configuration file, as dpkg does until a purge.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/fanoutd $(DESTDIR)$(BINDIR)/fanout \
	    $(UNITS:%=$(DESTDIR)$(SYSTEMDUNITDIR)/%) \
	    $(DESTDIR)$(SYSUSERSDIR)/fanoutd.conf $(DESTDIR)$(MANDIR)/man8/fanoutd.8 \
	    $(DESTDIR)$(MANDIR)/man5/fanoutd.conf.5 $(DESTDIR)$(MANDIR)/man1/fanout.1

# build/pkg/fanoutd_VERSION_ARCH.deb, built from a copy of the work tree.
package:
	@sh scripts/deps.sh package
	scripts/package

# The .deb checked: lintian, contents, conffiles, units, sandbox score.
package-test: package
	scripts/package-test
