# kvmbox build. `make` builds the binary, the library and the guest tests;
# `make check` installs what is missing, then runs every test (normal and ASan+UBSan builds).
# Module fragments (*/module.mk) add sources; files named cli_*.c and vmm/main.c form the
# command line, everything else goes into libkvmbox.

BUILD   ?= build
SAN     ?= 0
VERSION := 0.1.0
CC      ?= gcc
PKGS    := libseccomp json-c liburing zlib slirp

CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -fno-strict-aliasing \
           -D_GNU_SOURCE -DKVMBOX_VERSION='"$(VERSION)"' -Iinclude -I. -I$(BUILD)/gen -MMD -MP -pthread
LDLIBS  += -pthread -lz -ljson-c -luring
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

ALL_SRCS := $(wildcard vmm/*.c devices/*.c virtio/*.c firmware/*.c block/*.c net/*.c)
CLI_SRCS := vmm/main.c $(foreach d,vmm devices virtio firmware block net,$(wildcard $(d)/cli_*.c))
LIB_SRCS := $(filter-out $(CLI_SRCS) %_fuzz.c %_gen.c,$(ALL_SRCS))

LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_OBJS := $(CLI_SRCS:%.c=$(BUILD)/%.o)
LIBKVMBOX := $(BUILD)/libkvmbox.a
KVMBOX := $(BUILD)/kvmbox

TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
EXAMPLE := $(BUILD)/examples/embed

.PHONY: all clean check unit-tests guest-tests integration asan-check deps demo bench fuzz
all: $(KVMBOX) $(EXAMPLE) guest-tests

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The seccomp programs are compiled at build time by a generator linked with libseccomp
# (vmm/sandbox_gen.c); kvmbox installs them as they are and does not load libseccomp.
GEN := $(BUILD)/gen
$(GEN)/sandbox_gen: vmm/sandbox_gen.c vmm/sandbox.h
	@mkdir -p $(dir $@)
	$(CC) -O1 -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -I. $< -o $@ -lseccomp

$(GEN)/sandbox_bpf.h: $(GEN)/sandbox_gen
	$< >$@.tmp && mv $@.tmp $@

$(BUILD)/vmm/sandbox.o: $(GEN)/sandbox_bpf.h

$(LIBKVMBOX): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(KVMBOX): $(CLI_OBJS) $(LIBKVMBOX)
	$(CC) $(LDFLAGS) $(CLI_OBJS) $(LIBKVMBOX) -o $@ $(LDLIBS) $(EXTRA_LDLIBS)

$(EXAMPLE): examples/embed.c $(LIBKVMBOX)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(LIBKVMBOX) -o $@ $(LDLIBS) $(EXTRA_LDLIBS)

$(BUILD)/tests/%: tests/%.c $(LIBKVMBOX)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(LIBKVMBOX) -o $@ $(LDLIBS) $(EXTRA_LDLIBS) $(shell pkg-config --libs check)

-include $(wildcard */module.mk)
-include $(LIB_OBJS:.o=.d) $(CLI_OBJS:.o=.d)

$(BUILD)/tests/.stamp: $(TEST_BINS)
	@mkdir -p $(dir $@) && touch $@

unit-tests: $(TEST_BINS)
	@tests/run-unit.sh $(TEST_BINS)

# The one test command (README, .ci/run): dependencies, build, unit, guest and integration
# tests, then the same under ASan+UBSan.
check: deps
	@tests/run-all.sh

# Tests too slow for CI on a host whose KVM emulates guest code (they run in check on others).
check-slow: deps all
	@KVMBOX_SLOW_TESTS=1 tests/t-linux-fw-early.sh

asan-check:
	$(MAKE) BUILD=build-asan SAN=1 all unit-tests

deps:
	@scripts/deps.sh

demo: deps
	$(MAKE) all
	@scripts/demo.sh

bench: all
	@bench/run.sh

clean:
	rm -rf build build-asan
