#!/bin/sh
# host-native.sh: prints "native" and exits 0 when this host's KVM runs guest code on hardware
# virtualization; otherwise prints the reason on one line and exits 1. Decided at run time
# from what the kernel reports, never assumed:
#   /dev/kvm exists; KVM is not PVM (module kvm_pvm, a software hypervisor that sends guest
#   code which is not PVM-aware through KVM's instruction emulator); the CPU flags have vmx or
#   svm; and kvm_intel or kvm_amd is loaded.
if [ ! -c /dev/kvm ]; then
    echo "no /dev/kvm on this host"; exit 1
fi
if [ -d /sys/module/kvm_pvm ]; then
    echo "KVM here is PVM (module kvm_pvm): no VMX/SVM, guest code runs through KVM's instruction emulator"
    exit 1
fi
if ! grep -E '^flags[[:space:]]*:' /proc/cpuinfo | grep -qwE 'vmx|svm'; then
    echo "the CPU flags have neither vmx nor svm: no hardware virtualization for KVM"; exit 1
fi
if [ ! -d /sys/module/kvm_intel ] && [ ! -d /sys/module/kvm_amd ]; then
    echo "the CPU has vmx/svm but neither kvm_intel nor kvm_amd is loaded"; exit 1
fi
echo native
