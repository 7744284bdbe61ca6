/* test_metrics.c — the Prometheus text: every family has HELP and TYPE, histogram buckets are
 * cumulative and end with +Inf == _count, label values are escaped, counters count. */
#include <criterion/criterion.h>

#include "server/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double value_of(const char *text, const char *series) {
    const char *p = text;
    size_t sl = strlen(series);
    while ((p = strstr(p, series))) {
        if ((p == text || p[-1] == '\n') && p[sl] == ' ') return strtod(p + sl + 1, NULL);
        p += sl;
    }
    cr_assert_fail("series %s not found", series);
    return -1;
}

Test(metrics, render_counts_and_histograms) {
    struct metrics m;
    metrics_init(&m);
    metrics_request(&m, METRICS_OUT_SUCCESS);
    metrics_request(&m, METRICS_OUT_SUCCESS);
    metrics_request(&m, METRICS_OUT_OVERLOADED);
    metrics_finished(&m, METRICS_FIN_STOP);
    metrics_tokens(&m, 10, 5);
    metrics_observe(&m, METRICS_H_TTFT, 0.003);
    metrics_observe(&m, METRICS_H_TTFT, 0.3);
    metrics_observe(&m, METRICS_H_TTFT, 1e6); /* only +Inf */
    metrics_iteration(&m, 3, 2, 4, 17, 0.25);
    metrics_set_ready(&m, 1);
    size_t len;
    char *t = metrics_render(&m, "my \"model\"\\x", "0.1.0", &len);
    cr_assert(t);
    cr_assert_eq(strlen(t), len);
    cr_assert(strstr(t, "model_name=\"my \\\"model\\\"\\\\x\""));
    cr_assert_float_eq(value_of(t, "flashgen_requests_total{outcome=\"success\"}"), 2, 0);
    cr_assert_float_eq(value_of(t, "flashgen_requests_total{outcome=\"overloaded\"}"), 1, 0);
    cr_assert_float_eq(
        value_of(t, "flashgen_request_success_total{finished_reason=\"stop_sequence\"}"), 1, 0);
    cr_assert_float_eq(value_of(t, "flashgen_prompt_tokens_total"), 10, 0);
    cr_assert_float_eq(value_of(t, "flashgen_generation_tokens_total"), 5, 0);
    cr_assert_float_eq(value_of(t, "flashgen_num_requests_running"), 3, 0);
    cr_assert_float_eq(value_of(t, "flashgen_num_requests_waiting"), 2, 0);
    cr_assert_float_eq(value_of(t, "flashgen_batch_size"), 4, 0);
    cr_assert_float_eq(value_of(t, "flashgen_kv_cache_usage_perc"), 0.25, 1e-9);
    cr_assert_float_eq(value_of(t, "flashgen_model_ready"), 1, 0);
    cr_assert_float_eq(value_of(t, "flashgen_time_to_first_token_seconds_bucket{le=\"0.001\"}"), 0,
                       0);
    cr_assert_float_eq(value_of(t, "flashgen_time_to_first_token_seconds_bucket{le=\"0.005\"}"), 1,
                       0);
    cr_assert_float_eq(value_of(t, "flashgen_time_to_first_token_seconds_bucket{le=\"0.5\"}"), 2,
                       0);
    cr_assert_float_eq(value_of(t, "flashgen_time_to_first_token_seconds_bucket{le=\"160\"}"), 2,
                       0);
    cr_assert_float_eq(value_of(t, "flashgen_time_to_first_token_seconds_bucket{le=\"+Inf\"}"), 3,
                       0);
    cr_assert_float_eq(value_of(t, "flashgen_time_to_first_token_seconds_count"), 3, 0);
    cr_assert_float_eq(value_of(t, "flashgen_time_to_first_token_seconds_sum"), 1e6 + 0.303, 1e-3);
    free(t);
    metrics_free(&m);
}

/* Every sample line belongs to a family declared by HELP and TYPE before it; buckets never
 * decrease. (promtool checks the same in the pytest suite.) */
Test(metrics, format_is_well_formed) {
    struct metrics m;
    metrics_init(&m);
    for (int i = 0; i < 100; i++)
        metrics_observe(&m, METRICS_H_ITL, i * 0.01);
    char *t = metrics_render(&m, "x", "v", NULL);
    char family[128] = "";
    int have_help = 0, have_type = 0;
    double last_bucket = -1;
    for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "# HELP ", 7)) {
            sscanf(line + 7, "%127s", family);
            have_help = 1, have_type = 0, last_bucket = -1;
            continue;
        }
        if (!strncmp(line, "# TYPE ", 7)) {
            char fam[128], type[32];
            cr_assert_eq(sscanf(line + 7, "%127s %31s", fam, type), 2);
            cr_assert_str_eq(fam, family);
            cr_assert(!strcmp(type, "counter") || !strcmp(type, "gauge") ||
                      !strcmp(type, "histogram"));
            have_type = 1;
            continue;
        }
        cr_assert(have_help && have_type, "sample before HELP/TYPE: %s", line);
        cr_assert(!strncmp(line, family, strlen(family)), "%s outside family %s", line, family);
        cr_assert(!strncmp(line, "flashgen_", 9));
        if (strstr(line, "_bucket{")) {
            double v = strtod(strrchr(line, ' ') + 1, NULL);
            cr_assert_geq(v, last_bucket, "bucket decreases: %s", line);
            last_bucket = v;
        }
    }
    free(t);
    metrics_free(&m);
}
