/* The one main() every Check suite needs: run it, report, exit non-zero on failure. */
#ifndef KVMBOX_CHECK_MAIN_H
#define KVMBOX_CHECK_MAIN_H

#include <check.h>

static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif
