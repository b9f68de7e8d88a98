/* Start-up timestamps for the benchmark's breakdown (bench/startup.sh, docs/benchmarks.md).
 * Off unless the environment variable KVMBOX_TRACE names a file: then the library records
 * CLOCK_MONOTONIC at each named step of start-up and teardown (a few hundred nanoseconds in
 * all), and the command line appends them to that file when it ends. The library itself
 * never writes the file. */
#ifndef KVMBOX_TRACE_H
#define KVMBOX_TRACE_H

#include <stdbool.h>
#include <stdint.h>

#define TRACE_MAX 256

/* Records "now" under WHAT (a string literal). Any thread; a no-op when tracing is off or
 * the table is full. */
void trace_mark(const char *what);
/* The same, but only the first time WHAT is marked (for steps in loops: the first guest
 * output, a vCPU's first exit). */
void trace_mark_once(const char *what);
/* Whether KVMBOX_TRACE is set (read once). */
bool trace_enabled(void);
/* The recorded marks, in the order they were taken; returns how many. */
unsigned trace_get(const char **what, uint64_t *ns, unsigned max);

#endif
