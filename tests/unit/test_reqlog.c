/* test_reqlog.c — the request log line: a text line cannot be forged or split by what a client
 * puts in the path (CR/LF, escape sequences, spaces, quotes), and JSON lines stay one object. */
#include <criterion/criterion.h>

#include "server/reqlog.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static char *render(int json, const struct reqlog *l) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert(f);
    reqlog_write(f, json, l);
    fclose(f);
    return buf;
}

Test(reqlog, text_escapes_control_bytes_and_separators) {
    struct reqlog l;
    reqlog_init(&l);
    l.method = "GET";
    l.path = "/x\r\n2026-01-01T00:00:00.000Z GET /forged 200\x1b[2J\x7f\"\\";
    l.status = 404;
    snprintf(l.error, sizeof l.error, "no route for GET %s", l.path);
    char *s = render(0, &l);
    size_t n = strlen(s);
    cr_assert(n > 0 && s[n - 1] == '\n');
    cr_assert_null(memchr(s, '\n', n - 1), "the line is split: %s", s);
    cr_assert_null(strchr(s, '\r'));
    cr_assert_null(strchr(s, '\x1b'));
    cr_assert_null(strchr(s, '\x7f'));
    cr_assert(strstr(s, " GET /x\\x0d\\x0a2026-01-01T00:00:00.000Z\\x20GET\\x20/forged\\x20200"
                        "\\x1b[2J\\x7f\\x22\\x5c 404 outcome=error"),
              "%s", s);
    /* the quoted error keeps its spaces but not its quotes or line breaks */
    cr_assert(strstr(s, " error=\"no route for GET /x\\x0d\\x0a2026"), "%s", s);
    cr_assert(strstr(s, "\\x22\\x5c\"\n"), "%s", s);
    free(s);
}

Test(reqlog, text_plain_path_unchanged) {
    struct reqlog l;
    reqlog_init(&l);
    l.method = "POST";
    l.path = "/v1/chat/completions";
    l.status = 200;
    char *s = render(0, &l);
    cr_assert(strstr(s, " POST /v1/chat/completions 200 outcome=success"), "%s", s);
    free(s);
}

Test(reqlog, json_line_is_one_object) {
    struct reqlog l;
    reqlog_init(&l);
    l.method = "GET";
    l.path = "/x\r\ny";
    l.status = 404;
    char *s = render(1, &l);
    size_t n = strlen(s);
    cr_assert_null(memchr(s, '\n', n - 1));
    cJSON *o = cJSON_Parse(s);
    cr_assert(o);
    cr_assert_str_eq(cJSON_GetObjectItem(o, "path")->valuestring, "/x\r\ny");
    cJSON_Delete(o);
    free(s);
}
