# Firmware boot benchmark: `make bench` runs it with the other benchmarks (bench/fw-bench.sh).
bench-fw: all
	@bench/fw-bench.sh
bench: bench-fw
.PHONY: bench-fw
