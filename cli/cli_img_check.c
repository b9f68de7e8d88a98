/* kvmbox img check: qemu-img check's report, repair modes and exit statuses
 * (0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 format has no checks). */
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "block/block.h"
#include "cli/cli_img.h"

enum { CHECK_FAILED = 1, CHECK_CORRUPT = 2, CHECK_LEAKS = 3, CHECK_UNSUPPORTED = 63 };

static double pct(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

static void report_human(const struct blk_check_result *r)
{
    if (!r->corruptions && !r->leaks && !r->check_errors) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions)
            printf("\n%llu errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image may corrupt it.\n",
                   (unsigned long long)r->corruptions);
        if (r->leaks)
            printf("\n%llu leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   (unsigned long long)r->leaks);
        if (r->check_errors)
            printf("\n%llu internal errors have occurred during the check.\n",
                   (unsigned long long)r->check_errors);
    }
    if (r->total_clusters && r->allocated_clusters)
        printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
               (unsigned long long)r->allocated_clusters, (unsigned long long)r->total_clusters,
               pct(r->allocated_clusters, r->total_clusters),
               pct(r->fragmented_clusters, r->allocated_clusters),
               pct(r->compressed_clusters, r->allocated_clusters));
    if (r->image_end_offset)
        printf("Image end offset: %llu\n", (unsigned long long)r->image_end_offset);
}

static void report_json(const char *path, const struct blk_check_result *r,
                        const struct blk_check_result *fixed)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "filename", json_object_new_string(path));
    json_object_object_add(o, "format", json_object_new_string("qcow2"));
    json_object_object_add(o, "check-errors", json_object_new_int64((int64_t)r->check_errors));
    json_object_object_add(o, "corruptions", json_object_new_int64((int64_t)r->corruptions));
    json_object_object_add(o, "leaks", json_object_new_int64((int64_t)r->leaks));
    if (fixed) {
        json_object_object_add(o, "corruptions-fixed",
                               json_object_new_int64((int64_t)fixed->corruptions_fixed));
        json_object_object_add(o, "leaks-fixed", json_object_new_int64((int64_t)fixed->leaks_fixed));
    }
    json_object_object_add(o, "image-end-offset", json_object_new_int64((int64_t)r->image_end_offset));
    json_object_object_add(o, "total-clusters", json_object_new_int64((int64_t)r->total_clusters));
    json_object_object_add(o, "allocated-clusters", json_object_new_int64((int64_t)r->allocated_clusters));
    json_object_object_add(o, "fragmented-clusters", json_object_new_int64((int64_t)r->fragmented_clusters));
    json_object_object_add(o, "compressed-clusters", json_object_new_int64((int64_t)r->compressed_clusters));
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

/* Repairs, then checks again so that what is reported is the state the image is left in
 * (qemu-img's "Double checking the fixed image now..."). */
static int check_and_repair(struct blk *b, unsigned repair, bool json, struct blk_check_result *res,
                            struct blk_check_result *fixed)
{
    int r = blk_check(b, repair, repair ? fixed : res);
    if (r < 0 || !repair)
        return r;
    if ((fixed->leaks_fixed || fixed->corruptions_fixed) && !json)
        printf("The following inconsistencies were found and repaired:\n\n    %llu leaked clusters\n"
               "    %llu corruptions\n\nDouble checking the fixed image now...\n",
               (unsigned long long)fixed->leaks_fixed, (unsigned long long)fixed->corruptions_fixed);
    if ((r = blk_flush(b)) < 0)
        return r;
    return blk_check(b, 0, res);
}

int img_cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = { { "output", required_argument, NULL, 'O' },
                                              { "force-share", no_argument, NULL, 'U' },
                                              { 0 } };
    const char *fmt = NULL;
    unsigned repair = 0;
    bool json = false, quiet = false;
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "f:r:qU", longopts, NULL)) != -1;) {
        if (c == 'f')
            fmt = optarg;
        else if (c == 'r' && !strcmp(optarg, "leaks"))
            repair = BLK_REPAIR_LEAKS;
        else if (c == 'r' && !strcmp(optarg, "all"))
            repair = BLK_REPAIR_LEAKS | BLK_REPAIR_ERRORS;
        else if (c == 'r')
            return img_usage("check", "-r takes leaks or all, not '%s'", optarg);
        else if (c == 'O' && (!strcmp(optarg, "json") || !strcmp(optarg, "human")))
            json = !strcmp(optarg, "json");
        else if (c == 'q')
            quiet = true;
        else if (c != 'U')
            return img_usage("check", "bad option");
    }
    if (optind != argc - 1)
        return img_usage("check", "expected one FILE");
    int r = img_check_format("check", fmt);
    if (r)
        return r;
    struct blk *b;
    int flags = BLK_O_NO_BACKING | (repair ? BLK_O_RDWR | BLK_O_REPAIR : BLK_O_FORCE_SHARE);
    if (img_open(argv[optind], fmt, flags, &b))
        return CHECK_FAILED;
    struct blk_info info;
    if ((r = blk_get_info(b, &info)) == 0 && strcmp(info.format, "qcow2")) {
        blk_close(b);
        img_fail("%s: this image format (%s) does not support checks", argv[optind], info.format);
        return CHECK_UNSUPPORTED;
    }
    struct blk_check_result res = { 0 }, fixed = { 0 };
    if (r < 0 || (r = check_and_repair(b, repair, json, &res, &fixed)) < 0) {
        img_blk_fail(b, r, "check failed");
        blk_close(b);
        return CHECK_FAILED;
    }
    if (res.corruptions && res.first_problem[0])
        fprintf(stderr, "ERROR %s\n", res.first_problem);
    if (json)
        report_json(argv[optind], &res, repair ? &fixed : NULL);
    else if (!quiet)
        report_human(&res);
    blk_close(b);
    return res.check_errors  ? CHECK_FAILED
           : res.corruptions ? CHECK_CORRUPT
           : res.leaks       ? CHECK_LEAKS
                             : IMG_OK;
}
