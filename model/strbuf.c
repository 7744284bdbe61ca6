/* strbuf.c — the growable string of strbuf.h: doubling reallocation, sticky out-of-memory. */
#include "model/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void strbuf_add(struct strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (n > (size_t)-1 / 2 - b->n - 256) { /* the doubled size below would overflow */
        b->oom = 1;
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t c = 2 * (b->n + n) + 256;
        char *np = realloc(b->p, c);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void strbuf_str(struct strbuf *b, const char *s) {
    strbuf_add(b, s, strlen(s));
}

void strbuf_printf(struct strbuf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        strbuf_add(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    strbuf_add(b, big, (size_t)n);
    free(big);
}

char *strbuf_take(struct strbuf *b) {
    strbuf_add(b, "", 0);
    char *p = b->oom ? NULL : b->p;
    if (b->oom) free(b->p);
    *b = (struct strbuf){0};
    return p;
}

void strbuf_free(struct strbuf *b) {
    if (!b) return;
    free(b->p);
    *b = (struct strbuf){0};
}
