# kvmbox-slirp: the user-mode network's helper process (net/slirp_helper.c), the only program
# linked with libslirp (and through it GLib). kvmbox starts it for each --net user NIC and
# looks for it next to itself first: it is built into $(BUILD) next to kvmbox and installed
# next to it. Built with the build's sanitizers; its seccomp program comes from sandbox_gen.
# -lslirp, not pkg-config's slirp.pc: that one asks for GLib's headers (libglib2.0-dev),
# which libslirp.h does not need.
SLIRP_HELPER := $(BUILD)/kvmbox-slirp

$(GEN)/slirp_helper_bpf.h: $(GEN)/sandbox_gen $(BUILD)/.flags
	$< --slirp-helper $(if $(filter 1,$(TSAN)),--tsan) >$@.tmp && mv $@.tmp $@

$(SLIRP_HELPER): net/slirp_helper.c net/slirp_proto.h $(GEN)/slirp_helper_bpf.h $(BUILD)/.flags
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) $< -o $@ -lslirp $(LDLIBS)

all: $(SLIRP_HELPER)
