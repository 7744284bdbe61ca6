/* cpu_as_cuda.c — a "CUDA backend" (kernels/ops.h, struct fg_cuda_backend) that is the CPU
 * backend, built as build/tests/libfg_cpu_as_cuda.so. Opened through FLASHGEN_CUDA_LIB it makes
 * engine_open take its GPU path without a GPU: the weights go through upload_weights into one
 * backend arena (the device layout: rope tables, the fp32 norm region, the element-type tensors)
 * and the forward pass reads them there, in fp32, so its logits must be the CPU engine's bit for
 * bit (tests/unit/test_engine_upload.c). Any thread, as the CPU backend.
 *
 * --gpu-weights quantized too: qresident_bytes / qupload / qlinear / qembed keep the GGUF blocks
 * (FG_QLAYOUT_ROWS: the file's rows; FG_QLAYOUT_GEMM: the same rows in reverse order, so that a
 * reader taking one layout for the other, such as a qembed blind to fg_qtensor.layout on a tied
 * head, gathers the wrong rows and the logits show it) and qlinear dequantizes W to fp32 and
 * calls the CPU op that the fp32 forward pass calls for the same product, so that the resident
 * path (which groups stay resident, how their parts are stacked, strided stores, the tied
 * embedding gathered from the head) is checked against the same fp32 logits. The bytes qupload
 * stored per layout are counted in fg_fake_qupload_bytes (the test reads them with dlsym).
 * FG_FAKE_QTYPES=T,T,... (ggml type numbers) limits the types it keeps, as a real backend keeps
 * only some; default: every quantized type model/gguf_quant.c dequantizes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "model/gguf_quant.h"

static int fake_keeps(uint32_t type) {
    if (!gguf_type_quantized(type) || !gguf_type_supported(type)) return 0;
    const char *list = getenv("FG_FAKE_QTYPES");
    if (!list) return 1;
    for (const char *p = list; *p;) {
        char *end;
        long t = strtol(p, &end, 10);
        if (end == p) break;
        if (t == (long)type) return 1;
        p = *end == ',' ? end + 1 : end;
    }
    return 0;
}

/* Bytes qupload stored since the backend was created, by enum fg_qlayout (the load of one
 * engine: test_engine_upload.c reads them before engine_close). */
__attribute__((visibility("default"))) size_t fg_fake_qupload_bytes[2];

static size_t fake_qresident_bytes(void *ctx, uint32_t type, int rows, int cols, int layout) {
    (void)ctx;
    (void)layout;
    if (!fake_keeps(type) || rows <= 0 || cols <= 0) return 0;
    return (size_t)rows * gguf_type_row_bytes(type, (uint64_t)cols);
}

/* Row r of a resident W (rows of w->row_bytes): in place (FG_QLAYOUT_ROWS) or counted from the
 * end (FG_QLAYOUT_GEMM, the fake's own layout; see the top of the file). */
static const void *fake_row(const struct fg_qtensor *w, int r) {
    int at = w->layout == FG_QLAYOUT_GEMM ? w->rows - 1 - r : r;
    return (const char *)w->data + (size_t)at * w->row_bytes;
}

static int fake_qupload(void *ctx, void *dst, const struct fg_qtensor *parts, int n_parts,
                        int layout) {
    (void)ctx;
    if (layout != FG_QLAYOUT_ROWS && layout != FG_QLAYOUT_GEMM) return -1;
    int rows = 0;
    for (int i = 0; i < n_parts; i++)
        rows += parts[i].rows;
    int r = 0; /* row of the stack */
    for (int i = 0; i < n_parts; i++)
        for (int k = 0; k < parts[i].rows; k++, r++) {
            int at = layout == FG_QLAYOUT_GEMM ? rows - 1 - r : r;
            memcpy((char *)dst + (size_t)at * parts[i].row_bytes,
                   (const char *)parts[i].data + (size_t)k * parts[i].row_bytes,
                   parts[i].row_bytes);
            fg_fake_qupload_bytes[layout] += parts[i].row_bytes;
        }
    return 0;
}

/* A test double's failure (out of memory, a type it does not keep): there is no error path in
 * qlinear, and a wrong product must not pass for a right one. */
static void fake_die(const char *what) {
    fprintf(stderr, "cpu_as_cuda: %s\n", what);
    abort();
}

/* x[t] = row tokens[t] of a resident table in either layout (ops.h qembed), fp32; an id out of
 * range gets zeros, as the CUDA gather from FG_QLAYOUT_GEMM (kernels/qgemv.h) */
static void fake_qembed(void *ctx, void *xv, const struct fg_qtensor *table, const int *tokens,
                        int n) {
    (void)ctx;
    float *x = xv;
    for (int t = 0; t < n; t++) {
        float *row = x + (size_t)t * table->cols;
        if (tokens[t] < 0 || tokens[t] >= table->rows)
            memset(row, 0, sizeof(float) * (size_t)table->cols);
        else if (gguf_dequantize(table->type, fake_row(table, tokens[t]), row,
                                 (uint64_t)table->cols) != 0)
            fake_die("qembed: type not kept");
    }
}

static void fake_qlinear(void *ctx, const struct fg_qlinear *a) {
    const struct fg_ops *cpu = cpu_ops();
    const struct fg_qtensor *w = a->w;
    if (w->layout != FG_QLAYOUT_GEMM) fake_die("qlinear: W not in FG_QLAYOUT_GEMM");
    float *wf = malloc((size_t)w->rows * w->cols * sizeof(float));
    if (!wf) fake_die("out of memory");
    for (int r = 0; r < w->rows; r++)
        if (gguf_dequantize(w->type, fake_row(w, r), wf + (size_t)r * w->cols, (uint64_t)w->cols) !=
            0)
            fake_die("qlinear: type not kept");
    const int n = a->n, in = w->cols, rows = w->rows;
    const float *h = a->x;
    switch (a->epilogue) {
    case FG_QL_SWIGLU: /* as forward.c's fp32 gate|up: norm_matmul with swiglu */
        if (!a->norm_w) fake_die("qlinear: swiglu without its norm");
        cpu->norm_matmul(ctx, a->out, a->h, a->x, a->norm_w, a->eps, wf, n, in, rows / 2, 1,
                         a->act_scratch);
        break;
    case FG_QL_ADD:
        if (a->norm_w) fake_die("qlinear: add with a norm");
        cpu->matmul_add(ctx, a->out, a->x, wf, n, in, rows);
        break;
    case FG_QL_STORE_F32: /* the head: rmsnorm, then the fp32 product */
        if (a->norm_w) {
            cpu->rmsnorm(ctx, a->h, a->x, a->norm_w, n, in, a->eps);
            h = a->h;
        }
        cpu->matmul_f32(ctx, a->out, h, wf, n, in, rows);
        break;
    default: { /* FG_QL_STORE, into columns of a wider matrix where ld_out says */
        int ld = a->ld_out > 0 ? a->ld_out : rows;
        float *dst = ld == rows ? a->out : malloc(sizeof(float) * (size_t)n * rows);
        if (!dst) fake_die("out of memory");
        if (a->norm_w)
            cpu->norm_matmul(ctx, dst, a->h, a->x, a->norm_w, a->eps, wf, n, in, rows, 0, NULL);
        else
            cpu->matmul(ctx, dst, a->x, wf, n, in, rows);
        if (dst != a->out) {
            for (int r = 0; r < n; r++)
                memcpy((float *)a->out + (size_t)r * ld, dst + (size_t)r * rows,
                       sizeof(float) * rows);
            free(dst);
        }
    }
    }
    free(wf);
}

static struct fg_ops fake_ops;

static void *fake_create(int device, char *err, size_t errlen) {
    (void)device;
    (void)err;
    (void)errlen;
    fg_fake_qupload_bytes[0] = fg_fake_qupload_bytes[1] = 0;
    return cpu_ops_create(2);
}

static void fake_destroy(void *ctx) {
    cpu_ops_destroy(ctx);
}

static int fake_mem_info(void *ctx, size_t *free_bytes, size_t *total_bytes) {
    (void)ctx;
    *free_bytes = (size_t)1 << 30; /* what engine_open sizes a default KV pool from */
    *total_bytes = (size_t)2 << 30;
    return 0;
}

static const char *fake_device_name(void *ctx) {
    (void)ctx;
    return "cpu as cuda";
}

static const char *fake_last_error(void *ctx) {
    (void)ctx;
    return "";
}

static struct fg_cuda_backend fake_backend;

__attribute__((visibility("default"))) const struct fg_cuda_backend *fg_cuda_backend(void) {
    fake_ops = *cpu_ops();
    fake_ops.qresident_bytes = fake_qresident_bytes;
    fake_ops.qupload = fake_qupload;
    fake_ops.qlinear = fake_qlinear;
    fake_ops.qembed = fake_qembed;
    fake_backend = (struct fg_cuda_backend){.abi = FG_CUDA_BACKEND_ABI,
                                            .ops = &fake_ops,
                                            .create = fake_create,
                                            .destroy = fake_destroy,
                                            .mem_info = fake_mem_info,
                                            .device_name = fake_device_name,
                                            .last_error = fake_last_error};
    return &fake_backend;
}
