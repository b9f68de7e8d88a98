/* kvmbox img: qemu-img's everyday subcommands on kvmbox's block layer. */
#ifndef KVMBOX_CLI_IMG_H
#define KVMBOX_CLI_IMG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* argv[0] is "img". Returns the process exit status (0 ok, 1 error, 2 usage; check and
 * compare use qemu-img's statuses). */
int cli_img_main(int argc, char **argv);

/* ---- Internal to the cli/cli_img*.c files; nobody else should call these. ---- */

struct blk;
struct blk_create_opts;

/* Exit statuses beyond 0/1/2 are per command (check: 2 corrupt, 3 leaks, 63 unsupported;
 * compare: 1 different, 2 open error, 4 read error), as qemu-img has them. */
enum { IMG_OK = 0, IMG_ERR = 1, IMG_USAGE = 2 };

/* Prints "kvmbox img: <message>" on stderr; returns IMG_ERR. */
int img_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "kvmbox img <cmd>: <message> (see kvmbox img --help)"; returns IMG_USAGE. */
int img_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "kvmbox img: <what>: <the handle's last error or strerror(-err)>"; returns IMG_ERR. */
int img_blk_fail(struct blk *b, int err, const char *what);

/* Opens PATH (FMT NULL: probe). 0, or IMG_ERR after printing the one-line reason. */
int img_open(const char *path, const char *fmt, int flags, struct blk **out);
/* Whether --untrusted was given, and the backing file (and format) it allows, or NULL. */
bool img_untrusted(const char **backing, const char **backing_format);
/* FMT must be NULL, "raw" or "qcow2"; otherwise prints the usage error and returns IMG_USAGE. */
int img_check_format(const char *cmd, const char *fmt);
/* A backing file name as an image refers to it: relative names are relative to the
 * image's directory (as qemu resolves them). */
void img_resolve_backing(const char *image, const char *backing, char *out, size_t len);
/* -o key=value[,key=value...] into O for FORMAT ("raw" takes none of qcow2's options).
 * S is split in place: backing_file= and backing_fmt= leave pointers into it in O.
 * 0, or IMG_USAGE after printing which option is wrong. */
int img_parse_create_opts(const char *cmd, char *s, const char *format, struct blk_create_opts *o);
/* Parses a size with an optional K/M/G/T suffix; prints the usage error on failure. */
int img_parse_size(const char *cmd, const char *what, const char *s, uint64_t *out);
/* qemu's human sizes: three significant digits, binary units ("3.26 MiB", "0 B"). */
void img_size_str(uint64_t v, char *buf, size_t len);

/* The run at OFF (at most LEN bytes) that reads as zeroes through B's whole backing chain
 * without reading any data: *zero says whether the run [off, off+*pnum) is known to be zero
 * (false: it may hold data). Returns 0 or a negative errno. */
int img_zero_run(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, bool *zero);
/* Whether N bytes at P are all zero. */
bool img_all_zero(const void *p, size_t n);

/* The subcommands; each gets argv with argv[0] the subcommand's name. */
int img_cmd_create(int argc, char **argv);   /* cli_img_create.c */
int img_cmd_resize(int argc, char **argv);   /* cli_img_create.c */
int img_cmd_snapshot(int argc, char **argv); /* cli_img_create.c */
int img_cmd_info(int argc, char **argv);     /* cli_img_info.c */
int img_cmd_map(int argc, char **argv);      /* cli_img_info.c */
int img_cmd_check(int argc, char **argv);    /* cli_img_check.c */
int img_cmd_convert(int argc, char **argv);  /* cli_img_convert.c */
int img_cmd_compare(int argc, char **argv);  /* cli_img_compare.c */
int img_cmd_commit(int argc, char **argv);   /* cli_img_backing.c */
int img_cmd_rebase(int argc, char **argv);   /* cli_img_backing.c */
int img_cmd_bench(int argc, char **argv);    /* cli_img_bench.c */

/* Prints the snapshot table like `qemu-img snapshot -l` (nothing when there are none).
 * 0, or a negative errno when the table cannot be read (nothing printed then). */
int img_print_snapshots(struct blk *b);

#endif
