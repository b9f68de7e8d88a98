/* Embedding kvmbox: boot a kernel as a sandbox and collect its verdict, no CLI involved.
 * usage: embed KERNEL [CMDLINE]   prints the guest's console and the stop reason; exits with
 * the same status `kvmbox run` would. */
#include <stdio.h>
#include <unistd.h>

#include "kvmbox.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s KERNEL [CMDLINE]\n", argv[0]);
        return 2;
    }
    struct kvmbox_config cfg;
    kvmbox_config_init(&cfg);
    cfg.kernel = argv[1];
    cfg.cmdline = argc > 2 ? argv[2] : "";
    cfg.mem_size = 64 << 20;
    cfg.timeout_secs = 60;
    cfg.console_out = STDOUT_FILENO;
    cfg.console_in = -1;

    struct kvmbox_vm *vm;
    struct kvmbox_result res;
    if (kvmbox_vm_create(&cfg, &vm, &res) < 0) {
        fprintf(stderr, "embed: %s\n", res.message);
        return res.config_error ? 2 : 4;
    }
    int r = kvmbox_vm_run(vm, &res);
    kvmbox_vm_destroy(vm);
    if (r < 0) {
        fprintf(stderr, "embed: %s\n", res.message);
        return 4;
    }
    int status = kvmbox_exit_status(&res);
    fprintf(stderr, "embed: guest stopped: %s (status %d)\n", res.message, status);
    return status;
}
