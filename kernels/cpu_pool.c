/* cpu_pool.c — worker threads for the CPU backend's parallel loops: they poll briefly between
 * loops while the machine is quiet and otherwise sleep on a condition variable.
 * A generation counter tells workers a new loop has started; a countdown tells the caller
 * that every chunk has finished. Workers time their wake-up (loop start to their first chunk)
 * into a running average, which decides the polling (below) and which cpu_pool_if_worth weighs
 * against the work: on the shared 2-vCPU VM a futex wake-up took ~10-50 µs when the other core
 * was free and often 50-500 µs when other processes held it, more than a decode step's small
 * products take on one thread. Polling at any load was measured first, 2026-12-02: with the
 * machine loaded it lost 1.3-8x of the decode rate (a polling thread spends its process group's
 * share of the CPU), so it is on only while the average says the machine is quiet. */
#include "cpu_pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct cpu_pool {
    int n_threads; /* including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    unsigned long generation; /* atomic; advanced under mu */
    int pending;              /* atomic: workers still running the current loop */
    int caller_asleep;        /* under mu: the caller waits on done */
    int stop;                 /* atomic; set under mu */
    /* the current loop */
    cpu_pool_fn fn;
    void *arg;
    size_t n, chunk;
    long long start_ns; /* when it was published */
    /* wake-up latency, ns: running average (atomic; workers write, cpu_pool_if_worth reads) */
    long long wake_ns;
    unsigned skipped; /* cpu_pool_if_worth's NULL answers since the last probe (caller only) */
    int burst;        /* atomic: loops left in the current probe (caller writes, workers read) */
};

static long long pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct worker_arg {
    struct cpu_pool *p;
    int index;
};

static void pool_run_chunk(struct cpu_pool *p, int index) {
    size_t begin = (size_t)index * p->chunk;
    size_t end = begin + p->chunk;
    if (end > p->n) end = p->n;
    if (begin < end) p->fn(p->arg, begin, end);
}

/* Polling between loops, only while the machine is quiet: a worker that finished its chunk, and
 * the caller waiting for the workers, poll for up to CPU_POOL_SPIN_NS before they sleep, when the
 * average wake-up is below CPU_POOL_QUIET_NS. Back-to-back loops (a decode step's ~150, a few µs
 * apart) then skip the futex and the scheduler; on a loaded machine the average is high and
 * nobody polls (polling there, measured 2026-12-02, lost 1.3-8x of the decode rate). */
#define CPU_POOL_QUIET_NS 60000
#define CPU_POOL_SPIN_NS 30000
/* cpu_pool_if_worth's probe: after CPU_POOL_PROBE_EVERY serial answers, CPU_POOL_PROBE_LOOPS loops
 * in a row through the pool with the workers polling. One lone probe measured only the futex
 * wake-up of workers asleep since the last one (the pool sat unused between probes): on the
 * 2-vCPU Intel VM of 2026-12-03 that kept the average above every decode product's break-even,
 * so decode ran on one thread for good (SmolLM2 Q4_1 51 tokens/s at 2 threads against 47 at one,
 * llama.cpp 98); a run of probes measures the wake-up of back-to-back loops, which is what
 * deciding for them needs. Under load that is high too, and the answers stay serial. */
#define CPU_POOL_PROBE_EVERY 32
#define CPU_POOL_PROBE_LOOPS 16

static inline void pool_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int pool_quiet(struct cpu_pool *p) {
    return __atomic_load_n(&p->burst, __ATOMIC_RELAXED) > 0 ||
           __atomic_load_n(&p->wake_ns, __ATOMIC_RELAXED) < CPU_POOL_QUIET_NS;
}

/* Poll until the generation differs from SEEN or stop is set (1), or CPU_POOL_SPIN_NS pass (0). */
static int pool_poll_generation(struct cpu_pool *p, unsigned long seen) {
    long long t0 = pool_now_ns();
    for (unsigned i = 1;; i++) {
        if (__atomic_load_n(&p->generation, __ATOMIC_ACQUIRE) != seen ||
            __atomic_load_n(&p->stop, __ATOMIC_ACQUIRE))
            return 1;
        pool_relax();
        if ((i & 63) == 0 && pool_now_ns() - t0 > CPU_POOL_SPIN_NS) return 0;
    }
}

static void *pool_worker(void *varg) {
    struct worker_arg *wa = varg;
    struct cpu_pool *p = wa->p;
    int index = wa->index;
    free(wa);
    unsigned long seen = 0;
    for (;;) {
        if (!(pool_quiet(p) && pool_poll_generation(p, seen))) {
            pthread_mutex_lock(&p->mu);
            while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE) &&
                   __atomic_load_n(&p->generation, __ATOMIC_ACQUIRE) == seen)
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) break;
        /* the loop's fields were written before its generation was published (release) */
        seen = __atomic_load_n(&p->generation, __ATOMIC_ACQUIRE);
        long long start = p->start_ns;
        /* the average moves 1/8 of the way to each new sample */
        long long lat = pool_now_ns() - start, avg = __atomic_load_n(&p->wake_ns, __ATOMIC_RELAXED);
        __atomic_store_n(&p->wake_ns, avg + (lat - avg) / 8, __ATOMIC_RELAXED);
        pool_run_chunk(p, index);
        if (__atomic_sub_fetch(&p->pending, 1, __ATOMIC_ACQ_REL) == 0) {
            pthread_mutex_lock(&p->mu);
            if (p->caller_asleep) pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

struct cpu_pool *cpu_pool_create(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    struct cpu_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->n_threads = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) {
        cpu_pool_destroy(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *wa = malloc(sizeof(*wa));
        if (!wa) break;
        wa->p = p;
        wa->index = i;
        if (pthread_create(&p->threads[i], NULL, pool_worker, wa) != 0) {
            free(wa);
            break;
        }
        p->n_threads++;
    }
    return p;
}

int cpu_pool_size(const struct cpu_pool *p) {
    return p ? p->n_threads : 0;
}

void cpu_pool_destroy(struct cpu_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

void cpu_pool_for(struct cpu_pool *p, size_t n, size_t grain, cpu_pool_fn fn, void *arg) {
    if (n == 0) return;
    if (grain == 0) grain = 1;
    int nt = p ? p->n_threads : 1;
    if (nt == 1 || n <= grain) {
        fn(arg, 0, n);
        return;
    }
    size_t chunk = (n + (size_t)nt - 1) / (size_t)nt;
    chunk = (chunk + grain - 1) / grain * grain;
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->chunk = chunk;
    p->start_ns = pool_now_ns();
    __atomic_store_n(&p->pending, nt - 1, __ATOMIC_RELAXED);
    /* published under the mutex, so that a worker between its last check and its wait cannot
     * miss the broadcast; a polling worker sees the new generation without it */
    pthread_mutex_lock(&p->mu);
    __atomic_add_fetch(&p->generation, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    pool_run_chunk(p, 0);
    if (pool_quiet(p)) {
        long long t0 = pool_now_ns();
        for (unsigned i = 1; __atomic_load_n(&p->pending, __ATOMIC_ACQUIRE) > 0; i++) {
            pool_relax();
            if ((i & 63) == 0 && pool_now_ns() - t0 > CPU_POOL_SPIN_NS) break;
        }
    }
    if (__atomic_load_n(&p->pending, __ATOMIC_ACQUIRE) > 0) {
        pthread_mutex_lock(&p->mu);
        p->caller_asleep = 1;
        while (__atomic_load_n(&p->pending, __ATOMIC_ACQUIRE) > 0)
            pthread_cond_wait(&p->done, &p->mu);
        p->caller_asleep = 0;
        pthread_mutex_unlock(&p->mu);
    }
}

struct cpu_pool *cpu_pool_if_worth(struct cpu_pool *p, double serial_ns) {
    if (!p || p->n_threads == 1) return p;
    int burst = __atomic_load_n(&p->burst, __ATOMIC_RELAXED);
    if (burst > 0) { /* a probe: its loops back to back, the workers polling */
        __atomic_store_n(&p->burst, burst - 1, __ATOMIC_RELAXED);
        return p;
    }
    double wake = (double)__atomic_load_n(&p->wake_ns, __ATOMIC_RELAXED);
    if (serial_ns / p->n_threads + wake < serial_ns) return p;
    if (++p->skipped >= CPU_POOL_PROBE_EVERY) { /* so that a past load spike is not kept */
        p->skipped = 0;
        __atomic_store_n(&p->burst, CPU_POOL_PROBE_LOOPS - 1, __ATOMIC_RELAXED);
        return p;
    }
    return NULL;
}
