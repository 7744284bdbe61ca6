/* cpu_as_cuda.c — a "CUDA backend" (kernels/ops.h, struct fg_cuda_backend) that is the CPU
 * backend, built as build/tests/libfg_cpu_as_cuda.so. Opened through FLASHGEN_CUDA_LIB it makes
 * engine_open take its GPU path without a GPU: the weights go through upload_weights into one
 * backend arena (the device layout: rope tables, the fp32 norm region, the element-type tensors)
 * and the forward pass reads them there, in fp32, so its logits must be the CPU engine's bit for
 * bit (tests/unit/test_engine_upload.c). It has no qupload: --gpu-weights quantized is not
 * covered. Any thread, as the CPU backend.
 */
#include <stddef.h>

#include "kernels/ops.h"

static void *fake_create(int device, char *err, size_t errlen) {
    (void)device;
    (void)err;
    (void)errlen;
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
    fake_backend = (struct fg_cuda_backend){.abi = FG_CUDA_BACKEND_ABI,
                                            .ops = cpu_ops(),
                                            .create = fake_create,
                                            .destroy = fake_destroy,
                                            .mem_info = fake_mem_info,
                                            .device_name = fake_device_name,
                                            .last_error = fake_last_error};
    return &fake_backend;
}
