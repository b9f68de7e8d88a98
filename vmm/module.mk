# libFuzzer target for the saved-state parser: `make fuzz-state FUZZ_SECONDS=60`. The seed is
# written by the target itself (STATE_FUZZ_SEED).
$(BUILD)/fuzz/state_fuzz: vmm/state_fuzz.c vmm/state.c common/util.c
	@mkdir -p $(dir $@)
	clang -g -O1 -std=gnu11 -D_GNU_SOURCE -Iinclude -I. -fsanitize=fuzzer,address,undefined $^ -o $@ -lz

fuzz-state: $(BUILD)/fuzz/state_fuzz
	@mkdir -p $(BUILD)/fuzz/state-corpus
	STATE_FUZZ_SEED=$(BUILD)/fuzz/state-corpus/seed $(BUILD)/fuzz/state_fuzz -runs=0 >/dev/null 2>&1
	$(BUILD)/fuzz/state_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 \
	    -timeout=10 -artifact_prefix=$(BUILD)/fuzz/state- $(BUILD)/fuzz/state-corpus

fuzz: fuzz-state
.PHONY: fuzz-state
