# Bare-metal guest-test kernels: 32-bit freestanding ELF with a multiboot header and a PVH
# note, so kvmbox and qemu -kernel both boot them. Built with their own flags: the host
# build's sanitizers must not reach them, and they are built by gcc whatever the host
# compiler is (make CC=clang, the TSan build): the same kernels in every build.
GT_CC ?= gcc
GT_DIR := $(BUILD)/guest-tests
GT_CFLAGS := -m32 -march=i686 -O2 -g -std=gnu11 -ffreestanding -fno-pic -fno-pie -fno-stack-protector \
             -fno-builtin -mno-sse -mno-mmx -mno-80387 -fno-asynchronous-unwind-tables \
             -Wall -Wextra -Werror -Iguest-tests/lib
GT_LDFLAGS := -m32 -nostdlib -static -no-pie -Wl,--build-id=none -Wl,--no-warn-rwx-segments -Wl,-T,guest-tests/lib/guest.ld
GT_LIB_SRCS := $(wildcard guest-tests/lib/*.c) $(wildcard guest-tests/lib/*.S)
GT_LIB_OBJS := $(patsubst guest-tests/lib/%,$(GT_DIR)/lib/%.o,$(GT_LIB_SRCS))
GT_TESTS := $(patsubst guest-tests/%.c,%,$(wildcard guest-tests/*.c))
GT_ELFS := $(GT_TESTS:%=$(GT_DIR)/%.elf) $(GT_DIR)/debug-exit-multiboot.elf

guest-tests: $(GT_ELFS)

$(GT_DIR)/lib/%.c.o: guest-tests/lib/%.c $(wildcard guest-tests/lib/*.h)
	@mkdir -p $(dir $@)
	$(GT_CC) $(GT_CFLAGS) -c $< -o $@

$(GT_DIR)/lib/%.S.o: guest-tests/lib/%.S
	@mkdir -p $(dir $@)
	$(GT_CC) $(GT_CFLAGS) -c $< -o $@

$(GT_DIR)/lib/entry-multiboot.o: guest-tests/lib/entry.S
	@mkdir -p $(dir $@)
	$(GT_CC) $(GT_CFLAGS) -DNO_PVH -c $< -o $@

$(GT_DIR)/%.o: guest-tests/%.c $(wildcard guest-tests/lib/*.h)
	@mkdir -p $(dir $@)
	$(GT_CC) $(GT_CFLAGS) -c $< -o $@

$(GT_DIR)/%.elf: $(GT_DIR)/%.o $(GT_LIB_OBJS) guest-tests/lib/guest.ld
	$(GT_CC) $(GT_LDFLAGS) $< $(GT_LIB_OBJS) -o $@

# The same debug-exit test without the PVH note: exercises kvmbox's multiboot loader.
$(GT_DIR)/debug-exit-multiboot.elf: $(GT_DIR)/debug-exit.o $(filter-out %/entry.S.o,$(GT_LIB_OBJS)) $(GT_DIR)/lib/entry-multiboot.o
	$(GT_CC) $(GT_LDFLAGS) $^ -o $@
