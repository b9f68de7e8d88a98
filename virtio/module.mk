# virtio benchmarks: `make bench` runs them after the start-up and image benchmarks.
bench-blk: all
	@bench/blk-bench.sh
bench: bench-blk
.PHONY: bench-blk

# libFuzzer target for guest-controlled virtio input: `make fuzz-virtio FUZZ_SECONDS=60`.
VIRTIO_FUZZ_SRCS := virtio/virtio_fuzz.c virtio/queue.c virtio/blk_req.c virtio/net_frame.c \
                    vmm/guest_mem.c common/util.c
$(BUILD)/fuzz/virtio_fuzz: $(VIRTIO_FUZZ_SRCS)
	@mkdir -p $(dir $@)
	clang -g -O1 -std=gnu11 -D_GNU_SOURCE -Iinclude -I. -fsanitize=fuzzer,address,undefined $^ -o $@

fuzz-virtio: $(BUILD)/fuzz/virtio_fuzz
	@mkdir -p $(BUILD)/fuzz/virtio-corpus
	@tests/virtio-fuzz-seeds.py $(BUILD)/fuzz/virtio-corpus
	$(BUILD)/fuzz/virtio_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=70000 -rss_limit_mb=2048 \
	    -timeout=10 -artifact_prefix=$(BUILD)/fuzz/virtio- $(BUILD)/fuzz/virtio-corpus

fuzz: fuzz-virtio
.PHONY: fuzz-virtio

bench-net: all
	@bench/net-bench.sh
bench: bench-net
.PHONY: bench-net
