# virtio benchmarks: `make bench` runs them after the start-up and image benchmarks.
bench-blk: all
	@bench/blk-bench.sh
bench: bench-blk
.PHONY: bench-blk
