# fanoutd: GNU make, pkg-config, nothing else. `make` builds ./fanoutd;
# `make test` builds an ASan+UBSan variant and runs every test against it.

PKGS     := libevent libevent_openssl openssl jansson libsystemd zlib
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

.PHONY: all deps test-deps run test unit integration asan clean bench
all: fanoutd

deps:
	@sh scripts/deps.sh
test-deps:
	@sh scripts/deps.sh test

build/rel/%.o: daemon/%.c daemon/*.h | build/rel
	$(CC) $(ALL_CFLAGS) -c -o $@ $<
build/asan/%.o: daemon/%.c daemon/*.h | build/asan
	$(CC) $(ALL_CFLAGS) $(SAN) -O1 -c -o $@ $<
build/rel build/asan:
	@mkdir -p $@

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

asan: build/asan/fanoutd

run: deps
	@$(MAKE) --no-print-directory fanoutd
	./fanoutd -c conf/fanoutd.conf

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do ASAN_OPTIONS=detect_leaks=1 ./$$t; done

integration: build/asan/fanoutd
	FANOUTD_BIN=$(CURDIR)/build/asan/fanoutd $(PYTEST) -q -p no:cacheprovider tests/integration

test: test-deps
	@$(MAKE) --no-print-directory fanoutd unit integration

bench:
	@sh scripts/deps.sh bench
	@$(MAKE) --no-print-directory fanoutd
	scripts/bench

clean:
	rm -rf build fanoutd
