/* tp_nccl.c — the NCCL communicator of tensor parallelism (model/tp.h): one rank per GPU, all
 * driven by the one worker thread.
 *
 * libnccl.so.2 is opened with dlopen and the handful of entry points below resolved by name, so
 * neither the CPU build nor the CPU image needs NCCL (or its header: the few types and enum values
 * used are NCCL's ABI, written out here from nccl.h: ncclSum 0, ncclFloat32 7, ncclBfloat16 9).
 * Every collective is queued on the shards' own CUDA streams inside one ncclGroupStart/End, so it
 * is ordered with the ops before and after it on each GPU without a host synchronisation.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "tp.h"

#define NCCL_SUM 0
#define NCCL_FLOAT32 7
#define NCCL_BFLOAT16 9

typedef struct nccl_comm *nccl_comm_t;

struct nccl {
    struct tp_comm base; /* first: the tp_comm the forward pass holds */
    void *dl;
    int (*comm_init_all)(nccl_comm_t *comms, int ndev, const int *devlist);
    int (*comm_destroy)(nccl_comm_t comm);
    int (*all_reduce)(const void *send, void *recv, size_t count, int dtype, int op,
                      nccl_comm_t comm, void *stream);
    int (*send)(const void *buf, size_t count, int dtype, int peer, nccl_comm_t comm, void *stream);
    int (*recv)(void *buf, size_t count, int dtype, int peer, nccl_comm_t comm, void *stream);
    int (*group_start)(void);
    int (*group_end)(void);
    const char *(*error_string)(int result);
    nccl_comm_t comms[TP_MAX_SHARDS];
    void *ctxs[TP_MAX_SHARDS];
    void *streams[TP_MAX_SHARDS];
    tp_activate_fn activate;
    float *stage[TP_MAX_SHARDS]; /* GPU 0: (max_rows, slice) of shard i's logits, i > 0 */
    int max_rows;
};

/* Record the first failure of CALL (an NCCL result). */
static void nccl_check(struct nccl *c, int rc, const char *call) {
    if (rc == 0 || c->base.error[0]) return;
    snprintf(c->base.error, sizeof(c->base.error), "nccl: %s: %s", call,
             c->error_string ? c->error_string(rc) : "error");
}

static void nccl_all_reduce(struct tp_comm *tc, void *const *bufs, size_t count) {
    struct nccl *c = (struct nccl *)tc;
    int dtype = tc->ops->act_size == 2 ? NCCL_BFLOAT16 : NCCL_FLOAT32;
    nccl_check(c, c->group_start(), "ncclGroupStart");
    for (int i = 0; i < tc->n; i++)
        nccl_check(
            c, c->all_reduce(bufs[i], bufs[i], count, dtype, NCCL_SUM, c->comms[i], c->streams[i]),
            "ncclAllReduce");
    nccl_check(c, c->group_end(), "ncclGroupEnd");
}

static void nccl_gather(struct tp_comm *tc, float *dst, float *const *src, const int *cols_lo,
                        int rows) {
    struct nccl *c = (struct nccl *)tc;
    if (rows > c->max_rows) {
        nccl_check(c, 1, "gather: more rows than the staging buffers hold");
        return;
    }
    if (tc->n > 1) { /* every other shard's slice to GPU 0 */
        nccl_check(c, c->group_start(), "ncclGroupStart");
        for (int i = 1; i < tc->n; i++) {
            size_t count = (size_t)rows * (cols_lo[i + 1] - cols_lo[i]);
            nccl_check(c, c->send(src[i], count, NCCL_FLOAT32, 0, c->comms[i], c->streams[i]),
                       "ncclSend");
            nccl_check(c, c->recv(c->stage[i], count, NCCL_FLOAT32, i, c->comms[0], c->streams[0]),
                       "ncclRecv");
        }
        nccl_check(c, c->group_end(), "ncclGroupEnd");
    }
    if (c->activate(c->ctxs[0]) != 0) nccl_check(c, 1, "cudaSetDevice");
    size_t ld = (size_t)cols_lo[tc->n];
    for (int i = 0; i < tc->n; i++) {
        const float *from = i == 0 ? src[0] : c->stage[i];
        size_t w = (size_t)(cols_lo[i + 1] - cols_lo[i]);
        if (w == ld) { /* one shard: the slice is the whole row */
            tc->ops->copy(c->ctxs[0], dst, from, (size_t)rows * w * sizeof(float));
            continue;
        }
        for (int r = 0; r < rows; r++)
            tc->ops->copy(c->ctxs[0], dst + r * ld + cols_lo[i], from + r * w, w * sizeof(float));
    }
}

static void nccl_free(struct tp_comm *tc) {
    struct nccl *c = (struct nccl *)tc;
    for (int i = 1; i < TP_MAX_SHARDS; i++)
        if (c->stage[i]) tc->ops->release(c->ctxs[0], c->stage[i]);
    for (int i = 0; i < tc->n; i++)
        if (c->comms[i]) c->comm_destroy(c->comms[i]);
    if (c->dl) dlclose(c->dl);
    free(c);
}

int tp_comm_nccl(struct tp_comm **out, int n, const struct fg_ops *ops, void *const *ctxs,
                 tp_stream_fn stream, tp_activate_fn activate, int max_rows, const int *cols_lo,
                 char *err, size_t errlen) {
    *out = NULL;
    if (n < 1 || n > TP_MAX_SHARDS) {
        snprintf(err, errlen, "nccl: %d ranks", n);
        return -1;
    }
    struct nccl *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "nccl: out of memory");
        return -1;
    }
    c->base.kind = "nccl";
    c->base.n = n;
    c->base.all_reduce_sum = nccl_all_reduce;
    c->base.gather = nccl_gather;
    c->base.free = nccl_free;
    c->base.ops = ops;
    c->base.ctx = ctxs[0];
    c->activate = activate;
    c->max_rows = max_rows;
    /* NVLink multicast (NVLS) stays off: on the shared GPU hosts a program using it can put
     * every GPU of the host out of service (the device notes, KINDS.md) */
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    c->dl = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!c->dl) {
        snprintf(err, errlen, "nccl: cannot open libnccl.so.2 (%s)", dlerror());
        nccl_free(&c->base);
        return -1;
    }
    struct {
        void **fn;
        const char *name;
    } syms[] = {
        {(void **)&c->comm_init_all, "ncclCommInitAll"},
        {(void **)&c->comm_destroy, "ncclCommDestroy"},
        {(void **)&c->all_reduce, "ncclAllReduce"},
        {(void **)&c->send, "ncclSend"},
        {(void **)&c->recv, "ncclRecv"},
        {(void **)&c->group_start, "ncclGroupStart"},
        {(void **)&c->group_end, "ncclGroupEnd"},
        {(void **)&c->error_string, "ncclGetErrorString"},
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        *syms[i].fn = dlsym(c->dl, syms[i].name);
        if (!*syms[i].fn) {
            snprintf(err, errlen, "nccl: libnccl.so.2 has no %s", syms[i].name);
            nccl_free(&c->base);
            return -1;
        }
    }
    int devs[TP_MAX_SHARDS];
    for (int i = 0; i < n; i++) {
        devs[i] = i;
        c->ctxs[i] = ctxs[i];
        c->streams[i] = stream(ctxs[i]);
    }
    int rc = c->comm_init_all(c->comms, n, devs);
    if (rc != 0) {
        snprintf(err, errlen, "nccl: ncclCommInitAll over %d GPUs: %s", n, c->error_string(rc));
        memset(c->comms, 0, sizeof(c->comms));
        nccl_free(&c->base);
        return -1;
    }
    if (activate(ctxs[0]) != 0) {
        snprintf(err, errlen, "nccl: cannot make GPU 0 current");
        nccl_free(&c->base);
        return -1;
    }
    for (int i = 1; i < n; i++) {
        c->stage[i] = ops->alloc(ctxs[0], sizeof(float) * (size_t)max_rows *
                                              (size_t)(cols_lo[i + 1] - cols_lo[i]));
        if (!c->stage[i]) {
            snprintf(err, errlen, "nccl: cannot allocate the logits' staging buffers");
            nccl_free(&c->base);
            return -1;
        }
    }
    *out = &c->base;
    return 0;
}
