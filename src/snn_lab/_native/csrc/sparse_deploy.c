/* snn_lab sparse step kernel: one time step of a (Linear -> LIF)* network whose layer
 * inputs are binary spikes.
 *
 * What it exploits (all of it exact for binary inputs):
 *   - binary inputs: a layer's input is the list of indices that spiked, so
 *     W x = sum of the weight rows of those indices (gather-accumulate, no multiplies);
 *   - sparse spikes: only active rows are read (MNIST inputs ~12%, hidden ~10-20%);
 *   - fused state update: accumulate -> bias -> LIF (where(v > vth, I, v*decay + I))
 *     -> threshold -> next layer's index list, in registers, one pass per block;
 *   - encoding on the device: Bernoulli draws from the counter hash of
 *     snn_lab.deploy.encoding, only for non-zero pixels.
 * Rounding: sums run over active inputs in increasing index order and the bias is added
 * last, so currents can differ from PyTorch's GEMM in the last bit; the LIF update itself
 * is the same sequence of float32 operations (build with -ffp-contract=off).
 *
 * Threads share the batch: each claims a chunk of samples and runs it block-major (one
 * 64-column slice of the weights at a time, which stays in its L2 cache across the
 * chunk's samples; the next rows are prefetched). The threads are a small pool owned by
 * the caller (snn_pool_create): workers spin briefly between steps, then sleep on a
 * condition variable; chunks are claimed from an atomic counter, so a worker the OS has
 * not scheduled never holds a step up.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "common.h"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

enum { KIND_LIF = 0, KIND_LI = 1 };
enum { ENC_HOST = 0, ENC_DEVICE = 1 };

typedef struct {
    int32_t n_layers, batch, threads /* unused: see the pool */, encode;
    const int32_t *n_in, *n_out, *n_pad, *kind;
    const float *vth, *decay;
    const float *const *wt;     /* [layer] -> W^T in the tiles of common.h, padded to n_pad
                                 * (snn_pack_weights): TILE-wide tiles, then VEC-wide ones */
    const float *const *bias;   /* [layer] -> [n_pad] */
    float *const *v;            /* [layer] -> [batch, n_pad] membrane (state) */
    int32_t *const *list;       /* [layer] -> [batch, n_in] active input indices */
    int32_t *const *count;      /* [layer] -> [batch] */
    const float *images;        /* [batch, n_in0] (device encoding) */
    int32_t *nz;                /* [batch, n_in0 + 8] non-zero pixel indices */
    float *nzp;                 /* [batch, n_in0 + 8] their intensities (compacted) */
    int32_t *nz_count;          /* [batch] */
    const uint32_t *keys;       /* [batch] per-sample keys k_n */
} net_t;

/* Bit i set when lane i of the comparison result is true. */
static inline unsigned lane_mask(v8i m) {
#if defined(__AVX__)
    return (unsigned)_mm256_movemask_ps((__m256)m);
#else
    unsigned bits = 0;
    for (int i = 0; i < 8; ++i) bits |= (m[i] ? 1u : 0u) << i;
    return bits;
#endif
}

static inline v8u mix32v(v8u x) {
    x ^= x >> 16; x *= 0x21F0AAADu; x ^= x >> 15; x *= 0x735A2D97u; x ^= x >> 15;
    return x;
}

static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16; x *= 0x21F0AAADu; x ^= x >> 15; x *= 0x735A2D97u; x ^= x >> 15;
    return x;
}

int snn_abi_version(void) { return 6; }

/* W[N, K] (a Linear weight) -> the tiles of W^T that snn_step reads, npad columns. */
void snn_pack_weights(const float *W, float *Ap, int64_t K, int64_t N, int64_t npad) {
    for (int64_t c0 = 0; c0 < npad; c0 += tile_width(c0, npad))
        pack_tile_t(W, Ap, K, N, c0, tile_width(c0, npad));
}

/* Zero the state; with device encoding, list each sample's non-zero pixels. */
void snn_reset(const net_t *net) {
    for (int l = 0; l < net->n_layers; ++l)
        memset(net->v[l], 0, sizeof(float) * (size_t)net->batch * net->n_pad[l]);
    if (net->encode == ENC_DEVICE) {
        const int n0 = net->n_in[0];
        for (int b = 0; b < net->batch; ++b) {
            const float *p = net->images + (size_t)b * n0;
            int32_t *nz = net->nz + (size_t)b * (n0 + 8), c = 0;
            float *nzp = net->nzp + (size_t)b * (n0 + 8);
            for (int j = 0; j < n0; ++j)
                if (p[j] > 0.0f) { nz[c] = j; nzp[c++] = p[j]; }
            net->nz_count[b] = c;
            for (int k = c; k < c + 8; ++k) { nz[k] = 0; nzp[k] = 0.0f; }  /* pad: never spikes */
        }
    }
}

static void encode_sample(const net_t *net, int b, uint32_t t, const uint8_t *x) {
    const int n0 = net->n_in[0];
    int32_t *out = net->list[0] + (size_t)b * n0, c = 0;
    if (net->encode == ENC_DEVICE) {
        const int32_t *nz = net->nz + (size_t)b * (n0 + 8);
        const float *nzp = net->nzp + (size_t)b * (n0 + 8);
        const uint32_t key = mix32(net->keys[b] ^ (t * 0x85EBCA6Bu + 0xC2B2AE35u));
        const v8u keyv = {key, key, key, key, key, key, key, key};
        const v8f scale = splat(1.0f / 16777216.0f);
        const int m = net->nz_count[b];
        for (int k = 0; k < m; k += 8) {  /* 8 pixels at a time; the padding never spikes */
            v8u j;
            memcpy(&j, nz + k, sizeof j);
            const v8u h = mix32v(keyv + j * 0x27D4EB2Fu) >> 8;
            const v8i hi = (v8i)h;
            const v8f u = __builtin_convertvector(hi, v8f) * scale;  /* exact: h < 2^24 */
            unsigned bits = lane_mask(u < ld(nzp + k));
            while (bits) {
                out[c++] = nz[k + __builtin_ctz(bits)];
                bits &= bits - 1u;
            }
        }
    } else {
        const uint8_t *row = x + (size_t)b * n0;
        int j = 0;
        for (; j + 8 <= n0; j += 8) {
            uint64_t w;
            memcpy(&w, row + j, 8);
            if (!w) continue;
            for (int i = 0; i < 8; ++i)
                if (row[j + i]) out[c++] = j + i;
        }
        for (; j < n0; ++j)
            if (row[j]) out[c++] = j;
    }
    net->count[0][b] = c;
}

#ifndef PREFETCH
#define PREFETCH 8 /* rows ahead: their 4 cache lines are requested while this row is added */
#endif

/* Accumulate NV vectors (8 floats each) of columns [c0, c0 + 8 NV) for sample b of layer l,
 * then update the neurons and emit spikes/outputs. */
#define BLOCK_BODY(NV)                                                                     \
    {                                                                                      \
        v8f acc[NV];                                                                       \
        for (int q = 0; q < NV; ++q) acc[q] = splat(0.0f);                                 \
        const float *wb = w + (size_t)c0 * n_in;                                           \
        const int32_t *idx = net->list[l] + (size_t)b * n_in;                              \
        const int m = net->count[l][b];                                                    \
        for (int k = 0; k < m; ++k) {                                                      \
            if (NV == 8 && k + PREFETCH < m) {                                             \
                const char *nx = (const char *)(wb + (size_t)idx[k + PREFETCH] * TILE);    \
                __builtin_prefetch(nx);                                                    \
                __builtin_prefetch(nx + 64);                                               \
                __builtin_prefetch(nx + 128);                                              \
                __builtin_prefetch(nx + 192);                                              \
            }                                                                              \
            const float *row = wb + (size_t)idx[k] * (8 * NV);                             \
            for (int q = 0; q < NV; ++q) acc[q] += ld(row + 8 * q);                        \
        }                                                                                  \
        float *vv = net->v[l] + (size_t)b * n_pad + c0;                                    \
        for (int q = 0; q < NV; ++q) {                                                     \
            const v8f cur = acc[q] + ld(bias + c0 + 8 * q);                                \
            const v8f v = ld(vv + 8 * q);                                                  \
            v8f nv;                                                                        \
            if (kind == KIND_LIF) {                                                        \
                const v8i fired = v > vthv;                                                \
                const v8f leak = v * decv + cur;                                           \
                nv = (v8f)(((v8i)cur & fired) | ((v8i)leak & ~fired));                     \
            } else {                                                                       \
                nv = v * decv + cur;                                                       \
            }                                                                              \
            st(vv + 8 * q, nv);                                                            \
            const int base = c0 + 8 * q;                                                   \
            if (last) {                                                                    \
                float *o = out + (size_t)b * n_out;                                        \
                for (int i = 0; i < 8 && base + i < n_out; ++i)                            \
                    o[base + i] = (kind == KIND_LIF) ? (nv[i] > vth ? 1.0f : 0.0f) : nv[i]; \
            } else {                                                                       \
                unsigned bits = lane_mask(nv > vthv);                                      \
                if (base + 8 > n_out) bits &= (1u << (n_out - base)) - 1u;                 \
                if (bits) {                                                                \
                    int32_t *nxt = net->list[l + 1] + (size_t)b * n_out;                   \
                    int32_t c = net->count[l + 1][b];                                      \
                    do {                                                                   \
                        nxt[c++] = base + __builtin_ctz(bits);                             \
                        bits &= bits - 1u;                                                 \
                    } while (bits);                                                        \
                    net->count[l + 1][b] = c;                                              \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }

static void run_samples(const net_t *net, int b0, int b1, uint32_t t, const uint8_t *x, float *out) {
    for (int b = b0; b < b1; ++b) encode_sample(net, b, t, x);
    for (int l = 0; l < net->n_layers; ++l) {
        const int n_in = net->n_in[l], n_out = net->n_out[l], n_pad = net->n_pad[l];
        const int kind = net->kind[l], last = (l == net->n_layers - 1);
        const float vth = net->vth[l], dec = net->decay[l];
        const v8f vthv = splat(vth), decv = splat(dec);
        const float *w = net->wt[l], *bias = net->bias[l];
        if (!last)
            for (int b = b0; b < b1; ++b) net->count[l + 1][b] = 0;
        int c0 = 0;
        for (; c0 + TILE <= n_pad; c0 += TILE)  /* the tiles of snn_pack_weights */
            for (int b = b0; b < b1; ++b) BLOCK_BODY(8)
        for (; c0 < n_pad; c0 += VEC)
            for (int b = b0; b < b1; ++b) BLOCK_BODY(1)
    }
}

/* -- thread pool ------------------------------------------------------------------------
 * The batch is cut into chunks that threads claim from an atomic counter, so a step never
 * waits for a worker that the OS has not scheduled (a busy machine): whoever runs takes
 * the next chunk; the caller only waits for chunks a worker has already claimed. */
#define SPIN_ITERS 4000

typedef struct pool {
    int workers;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    atomic_uint gen;
    atomic_int next;    /* next chunk to claim */
    atomic_int done;    /* chunks finished */
    int quit;
    /* current job (written before `next` is reset, read after claiming a chunk) */
    const net_t *net;
    uint32_t t;
    const uint8_t *x;
    float *out;
    int chunk, chunks;
} pool_t;

/* Claim and run chunks until none is left; returns how many this thread ran. */
static int drain(pool_t *p) {
    int ran = 0;
    for (;;) {
        const int c = atomic_fetch_add_explicit(&p->next, 1, memory_order_acq_rel);
        if (c >= p->chunks) return ran;
        const int B = p->net->batch, b0 = c * p->chunk;
        const int b1 = b0 + p->chunk < B ? b0 + p->chunk : B;
        run_samples(p->net, b0, b1, p->t, p->x, p->out);
        ++ran;
        if (atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel) + 1 == p->chunks) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker_main(void *arg) {
    pool_t *p = (pool_t *)arg;
    unsigned seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen) {
            if (++spins < SPIN_ITERS) { CPU_RELAX(); continue; }
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !p->quit) pthread_cond_wait(&p->cv_work, &p->mu);
            pthread_mutex_unlock(&p->mu);
            break;
        }
        if (p->quit) return NULL;
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        drain(p);
    }
}

/* A pool with `threads - 1` workers (the caller is the other thread); NULL on failure. */
void *snn_pool_create(int threads) {
    pool_t *p = (pool_t *)calloc(1, sizeof(pool_t));
    if (!p) return NULL;
    p->workers = threads > 1 ? threads - 1 : 0;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->gen, 0);
    p->th = (pthread_t *)calloc(p->workers ? p->workers : 1, sizeof(pthread_t));
    atomic_init(&p->next, 0);
    atomic_init(&p->done, 0);
    for (int i = 0; i < p->workers; ++i) {
        if (pthread_create(&p->th[i], NULL, worker_main, p) != 0) {
            p->workers = i;
            break;
        }
    }
    return p;
}

void snn_pool_destroy(void *handle) {
    pool_t *p = (pool_t *)handle;
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->workers; ++i) pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    pthread_mutex_destroy(&p->mu);
    free(p->th);
    free(p);
}

int snn_pool_threads(void *handle) { return handle ? ((pool_t *)handle)->workers + 1 : 1; }

/* One time step for the whole batch. x: uint8 spikes [batch, n_in0] (host encoding) or
 * NULL (device encoding, step index t). out: [batch, n_out_last]. pool: NULL = this thread. */
void snn_step(const net_t *net, void *pool, uint32_t t, const uint8_t *x, float *out) {
    pool_t *p = (pool_t *)pool;
    if (!p || p->workers == 0 || net->batch < 2) {
        run_samples(net, 0, net->batch, t, x, out);
        return;
    }
    const int threads = p->workers + 1;
    p->net = net;
    p->t = t;
    p->x = x;
    p->out = out;
    p->chunk = (net->batch + 4 * threads - 1) / (4 * threads);
    p->chunks = (net->batch + p->chunk - 1) / p->chunk;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->next, 0, memory_order_release);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    drain(p);
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < p->chunks) {
        if (++spins < SPIN_ITERS) { CPU_RELAX(); continue; }
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->done) < p->chunks) pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
        break;
    }
}
