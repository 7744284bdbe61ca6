/* cpu_pool.h — a fixed set of worker threads for the CPU backend's parallel loops.
 *
 * cpu_pool_for splits [0, n) into one contiguous chunk per thread and runs fn on each, the
 * calling thread taking the first chunk; it returns when every chunk is done. One caller at a
 * time (the thread that owns the backend).
 */
#ifndef FG_CPU_POOL_H
#define FG_CPU_POOL_H

#include <stddef.h>

struct cpu_pool;
typedef void (*cpu_pool_fn)(void *arg, size_t begin, size_t end);

struct cpu_pool *cpu_pool_create(int n_threads); /* 0 = number of online cores */
void cpu_pool_destroy(struct cpu_pool *p);       /* accepts NULL */
int cpu_pool_size(const struct cpu_pool *p);     /* threads, the caller's included */
/* Run fn over [0, n) in chunks; chunks are rounded to multiples of GRAIN (>= 1). */
void cpu_pool_for(struct cpu_pool *p, size_t n, size_t grain, cpu_pool_fn fn, void *arg);
/* P, or NULL when work that takes one thread SERIAL_NS would not finish sooner split over the
 * pool: SERIAL_NS / threads + the workers' measured wake-up latency (a running average of the
 * time from a loop's start to a worker's first instruction of it) >= SERIAL_NS. After 32 calls
 * that said NULL, the next 16 say P (a probe: back-to-back loops, the workers polling), so the
 * average follows the machine's load. For the many
 * small products of a decode step. Caller: the pool's one caller. */
struct cpu_pool *cpu_pool_if_worth(struct cpu_pool *p, double serial_ns);

#endif
