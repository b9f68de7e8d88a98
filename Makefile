# kvmbox build. `make` builds the binary, the libraries and the guest tests;
# `make check` installs what is missing, then runs every test (normal, ASan+UBSan and TSan
# builds); `make install` (PREFIX, DESTDIR). CC, CFLAGS, CPPFLAGS and LDFLAGS are yours:
# `make CC=clang` and `make CFLAGS='-O0 -g'` build with everything kvmbox needs.
# Builds: BUILD=dir (default build), SAN=1 (ASan+UBSan), TSAN=1 (ThreadSanitizer, clang).
# Module fragments (*/module.mk) add sources; cli/ is the command line, everything else
# (common/ included) goes into libkvmbox.

BUILD   ?= build
SAN     ?= 0
TSAN    ?= 0
VERSION := 0.1.0
SOVERSION := 0
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
# kvmbox.pc names libdir relative to its prefix when it can (a relocated prefix stays valid).
LIBDIR_PC = $(if $(filter $(PREFIX)/lib,$(LIBDIR)),$${exec_prefix}/lib,$(LIBDIR))

# The ThreadSanitizer build uses clang (make BUILD=build-tsan TSAN=1); an explicit CC= wins.
ifeq ($(TSAN),1)
ifeq ($(origin CC),default)
CC := clang
endif
endif

# CFLAGS, CPPFLAGS and LDFLAGS are the user's (make CFLAGS='-O0 -g' keeps everything below).
# What kvmbox needs to build at all (feature macros, include paths, dependency files,
# threads, PIC for the shared library) is in KVMBOX_*; warnings are in WARNFLAGS.
CFLAGS    ?= -O2 -g
WARNFLAGS ?= -Wall -Wextra -Werror -Wno-unused-parameter
KVMBOX_CPPFLAGS := -D_GNU_SOURCE -DKVMBOX_VERSION='"$(VERSION)"' -DKVMBOX_HELPERDIR='"$(BINDIR)"' \
                   -Iinclude -I. -I$(BUILD)/gen
# -fPIC: the same objects make libkvmbox.a, libkvmbox.so and the kvmbox binary. Without
# -fno-semantic-interposition gcc would not inline a global function within its own file
# under -fPIC: kvmbox's start-up took 921 k user instructions instead of 857 k (callgrind,
# docs/benchmarks.md); with it, 862 k. libkvmbox.so exports only kvmbox_* anyway.
KVMBOX_CFLAGS   := -std=gnu11 -fno-strict-aliasing -pthread -fPIC -fno-semantic-interposition
SANFLAGS :=
ifeq ($(SAN),1)
SANFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
ifeq ($(TSAN),1)
SANFLAGS += -fsanitize=thread -fno-omit-frame-pointer
endif
ALL_CFLAGS  = $(KVMBOX_CPPFLAGS) $(CPPFLAGS) $(KVMBOX_CFLAGS) $(SANFLAGS) $(WARNFLAGS) $(CFLAGS)
ALL_LDFLAGS = $(SANFLAGS) -pthread $(LDFLAGS)
# Objects depend on the flags they were built with: a build directory rebuilt with other
# CC/CFLAGS/SAN/TSAN recompiles everything instead of mixing objects.
FLAGS_NOW := $(CC) $(ALL_CFLAGS) | $(TSAN)
ifneq ($(FLAGS_NOW),$(file < $(BUILD)/.flags))
$(shell mkdir -p $(BUILD))
$(file > $(BUILD)/.flags,$(FLAGS_NOW))
endif
DEP_LDLIBS := -lz -ljson-c -luring
# The kvmbox binary is linked statically, as a static PIE (its code still lands at a random
# address): it loads no library at run time (--net user runs libslirp in kvmbox-slirp, a
# process of its own), and a static kvmbox starts about 0.3 ms sooner and maps 1 MiB less of
# libc and ld.so (docs/benchmarks.md, issue 13). It calls nothing of glibc that needs NSS
# or dlopen (no getpw*, getaddrinfo, iconv): the link gives no warning, and a new one must
# be looked at. STATIC=0 links it dynamically; the sanitizer builds always are (their
# runtimes need it). libkvmbox.a/.so, the tests and the example are linked as before.
STATIC ?= 1
KVMBOX_LINK := $(if $(and $(filter 1,$(STATIC)),$(if $(SANFLAGS),,y)),-static-pie)
# LDLIBS is the user's too: kvmbox's own libraries come first, whatever it says.
ALL_LDLIBS = $(DEP_LDLIBS) -pthread $(LDLIBS)

ALL_SRCS := $(wildcard common/*.c vmm/*.c devices/*.c virtio/*.c firmware/*.c block/*.c net/*.c cli/*.c)
CLI_SRCS := $(wildcard cli/*.c)
LIB_SRCS := $(filter-out $(CLI_SRCS) %_fuzz.c %_gen.c net/slirp_helper.c,$(ALL_SRCS))

LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_OBJS := $(CLI_SRCS:%.c=$(BUILD)/%.o)
LIBKVMBOX := $(BUILD)/libkvmbox.a
SONAME := libkvmbox.so.$(SOVERSION)
LIBKVMBOX_SO := $(BUILD)/libkvmbox.so.$(VERSION)
KVMBOX := $(BUILD)/kvmbox

TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
EXAMPLE := $(BUILD)/examples/embed

.DELETE_ON_ERROR:
.PHONY: all clean check unit-tests guest-tests integration asan-check deps demo bench fuzz install FORCE
all: $(KVMBOX) $(LIBKVMBOX_SO) $(EXAMPLE) guest-tests

$(BUILD)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# The seccomp programs are compiled at build time by a generator linked with libseccomp
# (vmm/sandbox_gen.c); kvmbox installs them as they are and does not load libseccomp.
GEN := $(BUILD)/gen
$(GEN)/sandbox_gen: vmm/sandbox_gen.c vmm/sandbox.h
	@mkdir -p $(dir $@)
	$(CC) -O1 -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -I. $< -o $@ -lseccomp

# The TSan build's programs also allow what its runtime needs to report (sandbox_gen.c).
$(GEN)/sandbox_bpf.h: $(GEN)/sandbox_gen $(BUILD)/.flags
	$< $(if $(filter 1,$(TSAN)),--tsan) >$@.tmp && mv $@.tmp $@

$(BUILD)/vmm/sandbox.o: $(GEN)/sandbox_bpf.h

$(LIBKVMBOX): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The shared library is linked from the same (PIC) objects as the static one and exports
# only the public API (vmm/libkvmbox.map); -z defs: every symbol it uses resolves at link
# (not in sanitizer builds, whose runtime is linked into the program, not into libraries).
$(LIBKVMBOX_SO): $(LIB_OBJS) vmm/libkvmbox.map
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-soname,$(SONAME) -Wl,--version-script,vmm/libkvmbox.map \
	    $(if $(SANFLAGS),,-Wl,-z,defs) $(LIB_OBJS) -o $@ $(ALL_LDLIBS)
	ln -sf $(notdir $@) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libkvmbox.so

# kvmbox.pc is written at install time, for the PREFIX/LIBDIR of that install.
define KVMBOX_PC
prefix=$(PREFIX)
exec_prefix=$${prefix}
libdir=$(LIBDIR_PC)
includedir=$(if $(filter $(PREFIX)/include,$(INCLUDEDIR)),$${prefix}/include,$(INCLUDEDIR))

Name: kvmbox
Description: standalone x86-64 KVM hypervisor as a library
Version: $(VERSION)
Requires.private: json-c liburing zlib
Libs: -L$${libdir} -lkvmbox
Libs.private: -pthread
Cflags: -I$${includedir}
endef
export KVMBOX_PC

$(KVMBOX): $(CLI_OBJS) $(LIBKVMBOX) $(BUILD)/.link
	$(CC) $(ALL_LDFLAGS) $(KVMBOX_LINK) $(CLI_OBJS) $(LIBKVMBOX) -o $@ $(ALL_LDLIBS) $(EXTRA_LDLIBS)

# Relinked when STATIC changes.
$(BUILD)/.link: FORCE
	@mkdir -p $(BUILD)
	@[ "$$(cat $@ 2>/dev/null)" = "$(KVMBOX_LINK)" ] || echo "$(KVMBOX_LINK)" >$@
FORCE:

$(EXAMPLE): examples/embed.c $(LIBKVMBOX)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) $< $(LIBKVMBOX) -o $@ $(ALL_LDLIBS) $(EXTRA_LDLIBS)

$(BUILD)/tests/%: tests/%.c $(LIBKVMBOX)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) $< $(LIBKVMBOX) -o $@ $(ALL_LDLIBS) $(EXTRA_LDLIBS) $(shell pkg-config --libs check)

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

# The tree's C style (.clang-format), applied to every C file in git.
format:
	clang-format -i $$(git ls-files '*.c' '*.h')

asan-check:
	$(MAKE) BUILD=build-asan SAN=1 all unit-tests

deps:
	@scripts/deps.sh

demo: deps
	$(MAKE) all
	@scripts/demo.sh

bench: all
	@bench/run.sh
	@echo && echo "Save and restore (bench/savestate-bench.sh)" && bench/savestate-bench.sh

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary and its user-network helper
# (kvmbox-slirp, next to it: kvmbox looks there first), both libraries (the shared one
# versioned: libkvmbox.so.$(VERSION), soname $(SONAME), libkvmbox.so for linking), the
# public header and kvmbox.pc. tests/t-install.sh checks an embedder can build against it.
install: $(KVMBOX) $(SLIRP_HELPER) $(LIBKVMBOX) $(LIBKVMBOX_SO)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 755 $(KVMBOX) $(DESTDIR)$(BINDIR)/kvmbox
	install -m 755 $(SLIRP_HELPER) $(DESTDIR)$(BINDIR)/kvmbox-slirp
	install -m 644 $(LIBKVMBOX) $(DESTDIR)$(LIBDIR)/libkvmbox.a
	install -m 755 $(LIBKVMBOX_SO) $(DESTDIR)$(LIBDIR)/libkvmbox.so.$(VERSION)
	ln -sf libkvmbox.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libkvmbox.so
	install -m 644 include/kvmbox.h $(DESTDIR)$(INCLUDEDIR)/kvmbox.h
	printf '%s\n' "$$KVMBOX_PC" >$(DESTDIR)$(PKGCONFIGDIR)/kvmbox.pc && chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/kvmbox.pc

clean:
	rm -rf build build-asan build-tsan
