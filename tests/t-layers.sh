#!/bin/bash
# The layering rules of docs/architecture.md ("Layers"), checked on the source tree and the
# built library. One PASS/FAIL line per rule; a FAIL names the file and the include chain.
#   1. devices/, virtio/, net/, block/ and firmware/ reach (through any chain of includes) no
#      vmm/ header but the leaf ones: bus.h, guest_mem.h, layout.h, sandbox.h, state.h (common/ is
#      for everyone). So no vmm/vm.h: devices get struct dev_services (devices/services.h).
#   2. devices/ reaches nothing of virtio/, net/ or block/ (virtio builds on devices/pci.h).
#   3. net/ and block/ reach nothing of devices/ or virtio/, nor each other.
#   4. firmware/ reaches nothing of devices/, virtio/, net/ or block/.
#   5. include/kvmbox.h, the public API, includes no header of the tree.
#   6. No library file reaches a command-line header (cli/): only the command line does.
#   7. The library never prints: no object of libkvmbox calls a stdio output function.
#   8. common/ (helpers every layer uses) reaches nothing of the tree outside common/.
#   9. The API server and its commands (vmm/api_*.c) reach no vmm/vm.h: they use the library.
# The command line (cli/) is exempt from 1-4: it sits on top of everything.
# KVMBOX_LAYERS_ROOT points the source checks at another tree (to see them fail).
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
ROOT=${KVMBOX_LAYERS_ROOT:-.}

python3 - "$ROOT" <<'EOF'
import os, re, sys

root = sys.argv[1]
LEAF = {"vmm/bus.h", "vmm/guest_mem.h", "vmm/layout.h", "vmm/sandbox.h", "vmm/state.h"}
INC = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)

def direct(path):
    try:
        with open(os.path.join(root, path), errors="replace") as f:
            return [i for i in INC.findall(f.read()) if os.path.exists(os.path.join(root, i))]
    except OSError:
        return []

def closure(path):
    """Every tree header PATH reaches, each with the chain that reaches it."""
    seen, todo = {}, [(path, [path])]
    while todo:
        p, chain = todo.pop()
        for i in direct(p):
            if i not in seen:
                seen[i] = chain + [i]
                todo.append((i, chain + [i]))
    return seen

def sources(*dirs):
    out = []
    for d in dirs:
        full = os.path.join(root, d)
        if not os.path.isdir(full):
            continue
        for n in sorted(os.listdir(full)):
            if n.endswith((".c", ".h")):
                out.append(f"{d}/{n}")
    return out

def is_cli(path):
    return path.startswith("cli/")

def top(path):
    return path.split("/", 1)[0]

failed = False
def rule(name, files, bad):
    """bad(header) -> True when a file of FILES must not reach HEADER."""
    global failed
    problems = []
    for f in files:
        if is_cli(f):
            continue
        for h, chain in sorted(closure(f).items()):
            if bad(f, h):
                problems.append(chain)
    problems = [" -> ".join(c) for c in sorted(problems, key=lambda c: (len(c), c))]
    if not files:
        print(f"FAIL: layers: {name}: no files found under {root}")
        failed = True
    elif problems:
        for p in problems[:20]:
            print(f"    {p}")
        print(f"FAIL: layers: {name} ({len(problems)} include chains break it, listed above)")
        failed = True
    else:
        print(f"PASS: layers: {name}")

low = sources("devices", "virtio", "net", "block", "firmware")
rule("devices/, virtio/, net/, block/, firmware/ reach no vmm/ header but the leaf ones (no vmm/vm.h)",
     low, lambda f, h: top(h) == "vmm" and h not in LEAF)
rule("devices/ reaches nothing of virtio/, net/, block/", sources("devices"),
     lambda f, h: top(h) in ("virtio", "net", "block"))
rule("net/ and block/ reach nothing of devices/, virtio/ or each other", sources("net", "block"),
     lambda f, h: top(h) in ("devices", "virtio") or top(h) in ("net", "block") and top(h) != top(f))
rule("firmware/ reaches nothing of devices/, virtio/, net/, block/", sources("firmware"),
     lambda f, h: top(h) in ("devices", "virtio", "net", "block"))
rule("include/kvmbox.h includes no header of the tree", ["include/kvmbox.h"], lambda f, h: True)
lib = [f for f in sources("vmm", "devices", "virtio", "net", "block", "firmware", "common")
       if not f.endswith(("_fuzz.c", "_gen.c"))]
rule("no library file reaches a command-line header (cli/)", lib, lambda f, h: top(h) == "cli")
rule("common/ reaches nothing of the tree outside common/", sources("common"),
     lambda f, h: top(h) != "common")
rule("the API server and commands (vmm/api_*.c) reach no vmm/vm.h",
     [f for f in sources("vmm") if os.path.basename(f).startswith("api_")],
     lambda f, h: h == "vmm/vm.h")
sys.exit(1 if failed else 0)
EOF
rc=$?

# 7. Printing shows up as an undefined stdio symbol in the library's objects (the compiler
# turns printf into puts or fwrite, and _FORTIFY_SOURCE into __printf_chk: all listed).
LIB=$BUILD/libkvmbox.a
if [ -n "${KVMBOX_LAYERS_LIB:-}" ]; then LIB=$KVMBOX_LAYERS_LIB; fi
if [ ! -f "$LIB" ]; then
    echo "SKIP: layers: the library never prints ($LIB is not built)"
elif ! command -v nm >/dev/null; then
    echo "SKIP: layers: the library never prints (no nm)"
else
    out=$(nm -A "$LIB" 2>/dev/null | grep -E ' U (printf|fprintf|vprintf|vfprintf|dprintf|vdprintf|puts|fputs|putchar|fputc|putc|perror|fwrite|stdout|stderr|__(v?f?|v?d)printf_chk|psignal|psiginfo|err|errx|warn|warnx|verr|vwarn|error|error_at_line)$')
    if [ -n "$out" ]; then
        echo "$out" | sed 's/^/    /'
        echo "FAIL: layers: the library never prints (the objects above call stdio output)"
        rc=1
    else
        echo "PASS: layers: the library never prints (no stdio output in $LIB)"
    fi
fi
exit $rc
