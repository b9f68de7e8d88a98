/* The kvmbox command line: a thin client of libkvmbox and of running VMs' control sockets.
 * The one place that picks the process exit status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "include/kvmbox.h"
#include "cli/cli.h"
#include "vmm/trace.h"
#include "cli/cli_img.h"

static const char usage[] =
    "usage: kvmbox <command> [options]\n"
    "\n"
    "run a VM:\n"
    "  run [--daemonize] --kernel PATH ...   boot a kernel in a new VM (kvmbox run --help)\n"
    "  start NAME                           start a defined VM in the background\n"
    "manage running VMs (by name):\n"
    "  list [--all]                         running VMs (and defined ones with --all)\n"
    "  info NAME [--json]                   state, vCPUs, memory, uptime, pid, disks, NICs\n"
    "  console NAME                         attach to the serial console (Ctrl-] detaches)\n"
    "  pause NAME | resume NAME             stop and restart the vCPUs\n"
    "  shutdown NAME [--timeout S] [--force]  ACPI power button; wait for the guest to stop\n"
    "  reboot NAME                          clean shutdown followed by a fresh boot\n"
    "  reset NAME                           hard reset\n"
    "  kill NAME                            stop the VM at once\n"
    "  wait NAME                            wait for the VM to end; exit with its status\n"
    "  balloon NAME SIZE [--stats-interval S]  set the guest's memory target (virtio-balloon)\n"
    "  link NAME NIC up|down                set a NIC's link (NIC: index from 0, or MAC)\n"
    "  save NAME FILE                       write the VM's state to FILE and stop it\n"
    "  restore FILE [--name NAME] [--paused] [--prefault]  run a saved VM again\n"
    "  snapshot NAME create [SNAP] [--disk-only | --memory-only] [--description TEXT]\n"
    "                                       state + qcow2 internal snapshots of the disks\n"
    "  snapshot NAME list [--name] | current | revert SNAP | delete SNAP\n"
    "definitions:\n"
    "  define FILE [--force] | undefine NAME | dumpconfig NAME | clone SRC NEW [--linked]\n"
    "  settings [--json]                    the settings a definition (and run) takes\n"
    "disk images:\n"
    "  img SUBCOMMAND ...                   create, inspect, convert images (kvmbox img --help)\n"
    "  help | version\n"
    "\n"
    "exit status of run: 0 guest powered off, odd = the guest's debug-exit code (v<<1)|1,\n"
    "2 bad usage or configuration, 4 kvmbox failure, 6 guest panic, 124 --timeout expired,\n"
    "137 killed; of the other commands: 0 done, 1 failed, 2 bad usage\n";

/* KVMBOX_TRACE=FILE: append the start-up and teardown timestamps of a `run` to FILE, one
 * "ns step" line each (CLOCK_MONOTONIC), then a blank line (bench/startmark.c reads them). */
static void trace_write(void)
{
    const char *path = getenv("KVMBOX_TRACE");
    FILE *f = path && *path ? fopen(path, "a") : NULL;
    if (!f)
        return;
    const char *what[TRACE_MAX];
    uint64_t ns[TRACE_MAX];
    unsigned n = trace_get(what, ns, TRACE_MAX);
    for (unsigned i = 0; i < n; i++)
        fprintf(f, "%llu %s\n", (unsigned long long)ns[i], what[i]);
    fputc('\n', f);
    fclose(f);
}

int main(int argc, char **argv)
{
    trace_mark("main");
    if (argc < 2) {
        fputs(usage, stderr);
        return KVMBOX_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    static const char *const ctl[] = { "list",  "info", "pause", "resume",  "shutdown", "reboot",
                                       "reset", "kill", "wait",  "balloon", "link",     NULL };
    static const char *const defs[] = { "define", "undefine", "dumpconfig", "clone", "settings", NULL };
    if (!strcmp(cmd, "run")) {
        int status = cmd_run(argc - 1, argv + 1);
        if (trace_enabled()) {
            trace_mark("main returns");
            trace_write();
        }
        return status;
    }
    if (!strcmp(cmd, "start"))
        return cmd_start(argc - 1, argv + 1);
    if (!strcmp(cmd, "console"))
        return cmd_console(argc - 1, argv + 1);
    if (!strcmp(cmd, "save"))
        return cmd_save(argc - 1, argv + 1);
    if (!strcmp(cmd, "restore"))
        return cmd_restore(argc - 1, argv + 1);
    if (!strcmp(cmd, "snapshot"))
        return cmd_snapshot(argc - 1, argv + 1);
    for (int i = 0; ctl[i]; i++)
        if (!strcmp(cmd, ctl[i]))
            return cmd_ctl(cmd, argc - 1, argv + 1);
    for (int i = 0; defs[i]; i++)
        if (!strcmp(cmd, defs[i]))
            return cmd_def(cmd, argc - 1, argv + 1);
    if (!strcmp(cmd, "img"))
        return cli_img_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("kvmbox %s\n", kvmbox_version());
        return 0;
    }
    fprintf(stderr, "kvmbox: unknown command '%s'\n%s", cmd, usage);
    return KVMBOX_EXIT_USAGE;
}
