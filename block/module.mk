# Test tools for the block layer (not part of libkvmbox or the kvmbox binary).
$(BUILD)/tests/blkio: tests/blkio.c $(LIBKVMBOX)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(LIBKVMBOX) -o $@ $(LDLIBS)

all: $(BUILD)/tests/blkio
