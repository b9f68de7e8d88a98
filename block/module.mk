# Test tools for the block layer (not part of libkvmbox or the kvmbox binary).
$(BUILD)/tests/blkio: tests/blkio.c $(LIBKVMBOX)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) $< $(LIBKVMBOX) -o $@ $(ALL_LDLIBS)

all: $(BUILD)/tests/blkio

# libFuzzer target for the qcow2 parser: `make fuzz-qcow2 FUZZ_SECONDS=60`. The seed corpus
# is made by qemu-img at build time.
FUZZ_SECONDS ?= 60
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_SRCS := $(wildcard block/*.c common/util.c)
$(FUZZ_DIR)/qcow2_fuzz: $(FUZZ_SRCS)
	@mkdir -p $(dir $@)
	clang -g -O1 -std=gnu11 -D_GNU_SOURCE -Iinclude -I. -fsanitize=fuzzer,address,undefined \
	    $^ -o $@ -lz -pthread

$(FUZZ_DIR)/corpus/.stamp: block/module.mk
	@mkdir -p $(dir $@)
	@head -c 200000 /dev/urandom > $(FUZZ_DIR)/seed.raw
	@for o in compat=0.10 compat=1.1 compat=1.1,cluster_size=512 compat=1.1,refcount_bits=1; do \
	    qemu-img convert -O qcow2 -o $$o $(FUZZ_DIR)/seed.raw $(FUZZ_DIR)/corpus/seed-$$o.qcow2; done
	@qemu-img convert -c -O qcow2 -o cluster_size=4096 $(FUZZ_DIR)/seed.raw $(FUZZ_DIR)/corpus/seed-c.qcow2
	@qemu-img create -q -f qcow2 -o cluster_size=512 $(FUZZ_DIR)/corpus/seed-empty.qcow2 1M
	@qemu-img convert -O qcow2 -o cluster_size=4096,lazy_refcounts=on $(FUZZ_DIR)/seed.raw $(FUZZ_DIR)/corpus/seed-snap.qcow2
	@qemu-img snapshot -c s1 $(FUZZ_DIR)/corpus/seed-snap.qcow2
	@qemu-img create -q -f qcow2 -u -b base.qcow2 -F qcow2 -o cluster_size=4096 $(FUZZ_DIR)/corpus/seed-backing.qcow2 1M
	@rm -f $(FUZZ_DIR)/seed.raw
	@touch $@

fuzz-qcow2: $(FUZZ_DIR)/qcow2_fuzz $(FUZZ_DIR)/corpus/.stamp
	$(FUZZ_DIR)/qcow2_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=1048576 -rss_limit_mb=2048 \
	    -timeout=10 -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus

fuzz: fuzz-qcow2
.PHONY: fuzz-qcow2

bench-img: $(KVMBOX)
	@bench/img-bench.sh
bench: bench-img
.PHONY: bench-img
