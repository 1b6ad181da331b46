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
#include <sys/mman.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

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

int snn_abi_version(void) { return 7; }

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
            int j = 0;
#if defined(__AVX512F__)
            /* 16 pixels at a time by compress stores: a branch per pixel mispredicts at
               every stroke edge (this listing was about a twelfth of a batch's time) */
            const __m512i step16 = _mm512_set1_epi32(16);
            __m512i jv = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
            for (; j + 16 <= n0; j += 16, jv = _mm512_add_epi32(jv, step16)) {
                const __m512 pv = _mm512_loadu_ps(p + j);
                const __mmask16 m = _mm512_cmp_ps_mask(pv, _mm512_setzero_ps(), _CMP_GT_OQ);
                _mm512_mask_compressstoreu_epi32(nz + c, m, jv);
                _mm512_mask_compressstoreu_ps(nzp + c, m, pv);
                c += __builtin_popcount((unsigned)m);
            }
#endif
            for (; j < n0; ++j) {  /* branch-free */
                nz[c] = j;
                nzp[c] = p[j];
                c += p[j] > 0.0f;
            }
            net->nz_count[b] = c;
            for (int k = c; k < c + 8; ++k) { nz[k] = 0; nzp[k] = 0.0f; }  /* pad: never spikes */
        }
    }
}

/* Sample b's input spikes at step t as ascending indices into out; returns their count.
   x_row: the sample's uint8 spikes at t (host encoding), unused with device encoding. */
static int encode_into(const net_t *net, int b, uint32_t t, const uint8_t *x_row, int32_t *out) {
    const int n0 = net->n_in[0];
    int c = 0;
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
#if defined(__AVX512F__) && defined(__AVX512VL__)
            /* branch-free: which pixels spike is random, so a loop over them mispredicts */
            _mm256_mask_compressstoreu_epi32(out + c, (__mmask8)bits, (__m256i)j);
            c += __builtin_popcount(bits);
#else
            while (bits) {
                out[c++] = nz[k + __builtin_ctz(bits)];
                bits &= bits - 1u;
            }
#endif
        }
    } else {
        const uint8_t *row = x_row;
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
    return c;
}

static void encode_sample(const net_t *net, int b, uint32_t t, const uint8_t *x) {
    const int n0 = net->n_in[0];
    net->count[0][b] = encode_into(net, b, t, x ? x + (size_t)b * n0 : NULL, net->list[0] + (size_t)b * n0);
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


/* -- whole sequences ----------------------------------------------------------------------
 * snn_run: all T steps of a sample batch in one call. A chunk of samples runs layer by
 * layer over the whole sequence: per 64-column weight tile (kept in L2), per sample, the
 * time loop is innermost, so the tile's 64 membranes stay in registers across the T steps
 * and each tile is read from memory once per chunk instead of once per step; a layer's
 * output spikes become the next layer's per-step index lists. The arithmetic per step
 * and neuron is exactly snn_step's (the same sums in the same order, the same update),
 * so the outputs are the same floats; the last layer's outputs are summed over T in step
 * order, as the runtime's per-step loop sums them. */
typedef struct {
    int32_t *idx; /* [samples][T][cap] */
    int32_t *cnt; /* [samples][T] */
} seq_lists;

typedef struct {
    int32_t *bright; /* [samples][cap]: inputs firing at more than half of the steps */
    int32_t *nb;     /* [samples] */
    seq_lists sub;   /* per step: the bright inputs that stay silent */
} comp_lists;

/* Sum of the rows listed in idx[0..m) into NV 8-float vectors a (16-float ones for a full
   tile with WIDE16, common.h); SIGN += or -=. */
#define GATHER(NV, a, idx, m, SIGN)                                                        \
    {                                                                                      \
        if (NV == 8 && WIDE16) {                                                         \
            v16f a16[4];                                                                   \
            memcpy(a16, a, sizeof a16);                                                    \
            for (int k = 0; k < (m); ++k) {                                                \
                if (k + PREFETCH < (m)) {                                                  \
                    const char *nx = (const char *)(wb + (size_t)(idx)[k + PREFETCH] * TILE); \
                    __builtin_prefetch(nx);                                                \
                    __builtin_prefetch(nx + 64);                                           \
                    __builtin_prefetch(nx + 128);                                          \
                    __builtin_prefetch(nx + 192);                                          \
                }                                                                          \
                const float *row = wb + (size_t)(idx)[k] * TILE;                           \
                for (int q = 0; q < 4; ++q) a16[q] SIGN ld16(row + 16 * q);                \
            }                                                                              \
            memcpy(a, a16, sizeof a16);                                                    \
        } else {                                                                           \
            for (int k = 0; k < (m); ++k) {                                                \
                const float *row = wb + (size_t)(idx)[k] * (8 * NV);                       \
                for (int q = 0; q < NV; ++q) a[q] SIGN ld(row + 8 * q);                    \
            }                                                                              \
        }                                                                                  \
    }

/* A full 64-neuron tile of a hidden LIF layer at step t, as four 16-float vectors: the same
   operations per neuron as the 8-float path below (bias, then where(v > vth, I, v * decay
   + I)), and the indices of the neurons that fire appended to step t's list by compress
   stores, ascending, without a branch per vector (a spike pattern is no branch to predict:
   the per-vector branches cost more than the arithmetic). */
#if WIDE16
#define UPDATE64(v, acc, t)                                                                \
    {                                                                                      \
        const v16f vth16 = {vth, vth, vth, vth, vth, vth, vth, vth,                        \
                            vth, vth, vth, vth, vth, vth, vth, vth};                       \
        const v16f dec16 = {dec, dec, dec, dec, dec, dec, dec, dec,                        \
                            dec, dec, dec, dec, dec, dec, dec, dec};                       \
        const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0); \
        int32_t *nxt = out_l.idx + ((size_t)s * T + (t)) * cap;                            \
        int32_t c = out_l.cnt[s * T + (t)];                                                \
        for (int q = 0; q < 4; ++q) {                                                      \
            v16f a, vq;                                                                    \
            memcpy(&a, &acc[2 * q], sizeof a);                                             \
            memcpy(&vq, &v[2 * q], sizeof vq);                                             \
            const v16f cur = a + ld16(bias + c0 + 16 * q);                                 \
            const rvi fired = vq > vth16;                                                  \
            const v16f leak = vq * dec16 + cur;                                            \
            const v16f nv = (v16f)(((rvi)cur & fired) | ((rvi)leak & ~fired));             \
            memcpy(&v[2 * q], &nv, sizeof nv);                                             \
            const int base = c0 + 16 * q;                                                  \
            __mmask16 m = _mm512_cmp_ps_mask((__m512)nv, (__m512)vth16, _CMP_GT_OQ);       \
            if (base + 16 > n_out) m &= (__mmask16)(base >= n_out ? 0u : (1u << (n_out - base)) - 1u); \
            _mm512_mask_compressstoreu_epi32(nxt + c, m, _mm512_add_epi32(iota, _mm512_set1_epi32(base))); \
            c += __builtin_popcount((unsigned)m);                                          \
        }                                                                                  \
        out_l.cnt[s * T + (t)] = c;                                                        \
    }
#endif

/* COMP (a hidden layer's input with comp != NULL): inputs firing at most of the steps ("bright") are
   summed once per tile into `base`; a step then subtracts the bright ones that stay silent
   and adds the other ones that fire (fewer rows than all that fire). */
#define RUN_BLOCK(NV, COMP)                                                                \
    {                                                                                      \
        v8f v[NV], osum[NV], base[NV];                                                     \
        for (int q = 0; q < NV; ++q) v[q] = osum[q] = base[q] = splat(0.0f); /* v = 0 */  \
        const float *wb = w + (size_t)c0 * n_in;                                           \
        if (COMP) GATHER(NV, base, comp->bright + (size_t)s * cap, comp->nb[s], +=)        \
        for (int t = 0; t < T; ++t) {                                                      \
            v8f acc[NV];                                                                   \
            memcpy(acc, base, sizeof acc);                                                 \
            const int32_t *idx = in.idx + ((size_t)s * T + t) * cap;                       \
            GATHER(NV, acc, idx, in.cnt[s * T + t], +=)                                    \
            if (COMP)                                                                      \
                GATHER(NV, acc, comp->sub.idx + ((size_t)s * T + t) * cap, comp->sub.cnt[s * T + t], -=) \
            for (int q = 0; q < NV; ++q) {                                                 \
                const v8f cur = acc[q] + ld(bias + c0 + 8 * q);                            \
                v8f nv;                                                                    \
                if (kind == KIND_LIF) {                                                    \
                    const v8i fired = v[q] > vthv;                                         \
                    const v8f leak = v[q] * decv + cur;                                    \
                    nv = (v8f)(((v8i)cur & fired) | ((v8i)leak & ~fired));                 \
                } else {                                                                   \
                    nv = v[q] * decv + cur;                                                \
                }                                                                          \
                v[q] = nv;                                                                 \
                const int base = c0 + 8 * q;                                               \
                if (last) {                                                                \
                    osum[q] += (kind == KIND_LIF) ? mask_to(nv > vthv, 1.0f) : nv;         \
                } else {                                                                   \
                    unsigned bits = lane_mask(nv > vthv);                                  \
                    if (base + 8 > n_out) bits &= (1u << (n_out - base)) - 1u;             \
                    if (bits) {                                                            \
                        int32_t *nxt = out_l.idx + ((size_t)s * T + t) * cap;              \
                        int32_t c = out_l.cnt[s * T + t];                                  \
                        do {                                                               \
                            nxt[c++] = base + __builtin_ctz(bits);                         \
                            bits &= bits - 1u;                                             \
                        } while (bits);                                                    \
                        out_l.cnt[s * T + t] = c;                                          \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        if (last)                                                                          \
            for (int q = 0; q < NV; ++q)                                                   \
                for (int i = 0; i < 8 && c0 + 8 * q + i < n_out; ++i)                      \
                    out[(size_t)(b0 + s) * n_out + c0 + 8 * q + i] = osum[q][i];           \
    }

/* A hidden LIF layer's full tile (AVX-512) two steps at a time: the sums of steps t and
   t + 1 are gathered in one loop over both lists, each sum from its own rows in its own
   order (then RUN_BLOCK's update, step t first), so the floats are RUN_BLOCK's. Twice the
   independent additions in flight, and half the loop starts, for lists of a few dozen
   rows (the gather's cost per row was above a stand-alone loop's over the same tile). */
#if WIDE16
#define GATHER2(pa, pb, ia, ma, ib, mb, SIGN)                                              \
    {                                                                                      \
        const int mm_ = (ma) < (mb) ? (ma) : (mb);                                         \
        int k = 0;                                                                         \
        for (; k < mm_; ++k) {                                                             \
            const float *ra = wb + (size_t)(ia)[k] * TILE, *rb = wb + (size_t)(ib)[k] * TILE; \
            for (int q = 0; q < 4; ++q) {                                                  \
                pa[q] SIGN ld16(ra + 16 * q);                                              \
                pb[q] SIGN ld16(rb + 16 * q);                                              \
            }                                                                              \
        }                                                                                  \
        for (int k2 = k; k2 < (ma); ++k2) {                                                \
            const float *ra = wb + (size_t)(ia)[k2] * TILE;                                \
            for (int q = 0; q < 4; ++q) pa[q] SIGN ld16(ra + 16 * q);                      \
        }                                                                                  \
        for (int k2 = k; k2 < (mb); ++k2) {                                                \
            const float *rb = wb + (size_t)(ib)[k2] * TILE;                                \
            for (int q = 0; q < 4; ++q) pb[q] SIGN ld16(rb + 16 * q);                      \
        }                                                                                  \
    }

#define RUN_PAIRED(COMP)                                                                   \
    {                                                                                      \
        v8f v[8], base[8];                                                                 \
        for (int q = 0; q < 8; ++q) v[q] = base[q] = splat(0.0f); /* v = 0 */              \
        const float *wb = w + (size_t)c0 * n_in;                                           \
        if (COMP) GATHER(8, base, comp->bright + (size_t)s * cap, comp->nb[s], +=)         \
        v16f b16[4];                                                                       \
        memcpy(b16, base, sizeof b16);                                                     \
        for (int t = 0; t < T; t += 2) {                                                   \
            const int two = t + 1 < T;                                                     \
            v16f pa[4], pb[4];                                                             \
            for (int q = 0; q < 4; ++q) pa[q] = pb[q] = b16[q];                            \
            const size_t ra_ = ((size_t)s * T + t) * cap, rb_ = ra_ + (two ? cap : 0);     \
            GATHER2(pa, pb, in.idx + ra_, in.cnt[s * T + t], in.idx + rb_,                 \
                    two ? in.cnt[s * T + t + 1] : 0, +=)                                   \
            if (COMP)                                                                      \
                GATHER2(pa, pb, comp->sub.idx + ra_, comp->sub.cnt[s * T + t],             \
                        comp->sub.idx + rb_, two ? comp->sub.cnt[s * T + t + 1] : 0, -=)   \
            v8f acc[8];                                                                    \
            memcpy(acc, pa, sizeof acc);                                                   \
            UPDATE64(v, acc, t)                                                            \
            if (two) {                                                                     \
                memcpy(acc, pb, sizeof acc);                                               \
                UPDATE64(v, acc, t + 1)                                                    \
            }                                                                              \
        }                                                                                  \
    }
#endif

static int64_t count_all(seq_lists in, size_t n_cnt) {
    int64_t n = 0;
    for (size_t i = 0; i < n_cnt; ++i) n += in.cnt[i];
    return n;
}

/* Split a layer's input: per sample the inputs firing at more than half of the T steps
   ("bright") into cl->bright, per step the bright ones that stay silent into cl->sub; the
   step lists of `in` keep the other inputs (in place, still ascending). Returns the weight
   rows the layer then adds (the bright ones once, plus the step lists). */
static int64_t split_bright(seq_lists in, comp_lists *cl, int S, int T, int cap, int n_in) {
    uint64_t *fm = (uint64_t *)(((uintptr_t)(cl->sub.cnt + (size_t)S * T) + 7) & ~(uintptr_t)7);
    const uint64_t all = ((uint64_t)1 << (T - 1) << 1) - 1;
    int64_t rows = 0;
    for (int s = 0; s < S; ++s) {
        memset(fm, 0, sizeof(uint64_t) * (size_t)n_in);
        for (int t = 0; t < T; ++t) {
            const int32_t *li = in.idx + ((size_t)s * T + t) * cap;
            for (int k = 0; k < in.cnt[s * T + t]; ++k) fm[li[k]] |= (uint64_t)1 << t;
        }
        int32_t *br = cl->bright + (size_t)s * cap, nb = 0;
        for (int t = 0; t < T; ++t) cl->sub.cnt[s * T + t] = 0;
        for (int j = 0; j < n_in; ++j) {
            if (2 * __builtin_popcountll(fm[j]) <= T) continue;
            br[nb++] = j;
            for (uint64_t off = ~fm[j] & all; off; off &= off - 1) {
                const int t = __builtin_ctzll(off);
                cl->sub.idx[((size_t)s * T + t) * cap + cl->sub.cnt[s * T + t]++] = j;
            }
        }
        cl->nb[s] = nb;
        rows += nb;
        for (int t = 0; t < T; ++t) {
            int32_t *li = in.idx + ((size_t)s * T + t) * cap, c = 0;
            for (int k = 0; k < in.cnt[s * T + t]; ++k) {  /* branch-free compaction */
                li[c] = li[k];
                c += 2 * __builtin_popcountll(fm[li[k]]) <= T;
            }
            in.cnt[s * T + t] = c;
            rows += c + cl->sub.cnt[s * T + t];
        }
    }
    return rows;
}

/* Per-thread scratch for run_chunk's lists, kept between calls (grown when a bigger batch
   chunk needs it) on 2 MB-aligned memory advised for transparent huge pages: the same
   addresses every call, few TLB entries. Freed when the thread exits. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
typedef struct { void *p; size_t cap; } scratch_t;
static void scratch_free(void *arg) {
    scratch_t *sc = (scratch_t *)arg;
    free(sc->p);
    free(sc);
}
static void scratch_key_init(void) { (void)pthread_key_create(&scratch_key, scratch_free); }
static char *thread_scratch(size_t bytes) {
    pthread_once(&scratch_once, scratch_key_init);
    scratch_t *sc = (scratch_t *)pthread_getspecific(scratch_key);
    if (!sc) {
        sc = (scratch_t *)calloc(1, sizeof *sc);
        if (!sc || pthread_setspecific(scratch_key, sc) != 0) { free(sc); return NULL; }
    }
    if (sc->cap < bytes) {
        const size_t huge = (size_t)2 << 20, size = (bytes + huge - 1) & ~(huge - 1);
        void *p = NULL;
        if (posix_memalign(&p, huge, size) != 0) return NULL;
#ifdef MADV_HUGEPAGE
        (void)madvise(p, size, MADV_HUGEPAGE);
#endif
        free(sc->p);
        sc->p = p;
        sc->cap = size;
    }
    return (char *)sc->p;
}

/* Samples [b0, b1) over T steps; out[b][j] = sum over t of the last layer's output j;
   spk[l] += the input spikes layer l received (for the adds-per-sample count). */
static void run_chunk(const net_t *net, int b0, int b1, int T, const uint8_t *x, float *out, int64_t *spk,
                      int complement) {
    const int S = b1 - b0, L = net->n_layers;
    int cap = 1;
    for (int l = 0; l < L; ++l) cap = net->n_in[l] > cap ? net->n_in[l] : cap;
    const size_t n_idx = (size_t)S * T * cap, n_cnt = (size_t)S * T;
    const size_t mem_bytes = sizeof(int32_t) * 2 * (n_idx + n_cnt);
    const size_t cmem_bytes = sizeof(int32_t) * ((size_t)S * cap + S + n_idx + n_cnt) + sizeof(uint64_t) * (size_t)(cap + 1);
    char *scratch = thread_scratch(mem_bytes + 4096 + cmem_bytes);
    if (!scratch) return;  /* (out keeps zeros; cannot happen for MNIST-sized networks) */
    int32_t *mem = (int32_t *)scratch;
    seq_lists bufs[2] = {{mem, mem + n_idx}, {mem + n_idx + n_cnt, mem + 2 * n_idx + n_cnt}};
    const int n0 = net->n_in[0], B = net->batch;
    for (int s = 0; s < S; ++s)
        for (int t = 0; t < T; ++t)
            bufs[0].cnt[s * T + t] = encode_into(net, b0 + s, (uint32_t)t, x ? x + ((size_t)t * B + b0 + s) * n0 : NULL,
                                                 bufs[0].idx + ((size_t)s * T + t) * cap);
    comp_lists cl = {NULL, NULL, {NULL, NULL}};
    const int have_comp = complement && T >= 2 && T <= 64;
    int32_t *cmem = NULL;
    if (have_comp) {
        cmem = (int32_t *)(scratch + ((mem_bytes + 4095) & ~(size_t)4095));
        cl.bright = cmem;
        cl.nb = cmem + (size_t)S * cap;
        cl.sub.idx = cl.nb + S;
        cl.sub.cnt = cl.sub.idx + n_idx;
    }
    for (int l = 0; l < L; ++l) {
        /* the complement pays for the rate-coded input (most pixels of a digit are bright)
           and for a trained network's hidden layers too (neurons that fire at most steps:
           1.13-1.20x the samples/s of layer 0 alone, tutorial network, batch 28); the
           output layer's rows are 8 floats, where the split costs what it saves */
        const int comp_l = have_comp && l < L - 1;
        const seq_lists in = bufs[l % 2], out_l = bufs[(l + 1) % 2];
        const int n_in = net->n_in[l], n_out = net->n_out[l], n_pad = net->n_pad[l];
        const int kind = net->kind[l], last = (l == L - 1);
        const float vth = net->vth[l], dec = net->decay[l];
        const v8f vthv = splat(vth), decv = splat(dec);
        const float *w = net->wt[l], *bias = net->bias[l];
        /* weight rows this layer adds: its input spikes, or fewer with the complement */
        const int64_t received = comp_l ? split_bright(in, &cl, S, T, cap, n_in) : count_all(in, n_cnt);
        __atomic_fetch_add(&spk[l], received, __ATOMIC_RELAXED);
        if (!last) memset(out_l.cnt, 0, sizeof(int32_t) * n_cnt);
        const comp_lists *comp = comp_l ? &cl : NULL;
        int c0 = 0;
#if WIDE16
        if (kind == KIND_LIF && !last) {
            if (comp)
                for (; c0 + TILE <= n_pad; c0 += TILE)
                    for (int s = 0; s < S; ++s) RUN_PAIRED(1)
            else
                for (; c0 + TILE <= n_pad; c0 += TILE)
                    for (int s = 0; s < S; ++s) RUN_PAIRED(0)
        }
#endif
        if (comp) {
            for (; c0 + TILE <= n_pad; c0 += TILE)  /* the tiles of snn_pack_weights */
                for (int s = 0; s < S; ++s) RUN_BLOCK(8, 1)
            for (; c0 < n_pad; c0 += VEC)
                for (int s = 0; s < S; ++s) RUN_BLOCK(1, 1)
        } else {
            for (; c0 + TILE <= n_pad; c0 += TILE)
                for (int s = 0; s < S; ++s) RUN_BLOCK(8, 0)
            for (; c0 < n_pad; c0 += VEC)
                for (int s = 0; s < S; ++s) RUN_BLOCK(1, 0)
        }
        (void)vth;
    }
}

/* Register-resident vector float adds (16 independent chains of `width`-float vectors,
   8 or 16): the machine's add rate. Start values and increment are opaque to the
   compiler (from `iters`), so it cannot fold chains away. */
static double add_loop(int64_t iters, int width) {
    volatile float seed = (float)(iters & 7) * 0.25f, step = 1e-7f;
    const float s0 = seed, st = step;
    double r = 0.0;
    if (width == 16) {
        v16f a[16], inc;
        for (int l = 0; l < 16; ++l) inc[l] = st;
        for (int q = 0; q < 16; ++q)
            for (int l = 0; l < 16; ++l) a[q][l] = s0 + (float)q;
        for (int64_t i = 0; i < iters; ++i)
            for (int q = 0; q < 16; ++q) a[q] += inc;
        for (int q = 0; q < 16; ++q) r += a[q][0];
    } else {
        v8f a[16];
        const v8f inc = splat(st);
        for (int q = 0; q < 16; ++q) a[q] = splat(s0 + (float)q);
        for (int64_t i = 0; i < iters; ++i)
            for (int q = 0; q < 16; ++q) a[q] += inc;
        for (int q = 0; q < 16; ++q) r += a[q][0];
    }
    return r;
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
    int mode;          /* JOB_STEP, JOB_RUN (whole sequences, T steps) or JOB_ADDS */
    int T;
    int64_t *spk;
    int64_t iters;
    int width;
    int complement;
    double sink;
} pool_t;

enum { JOB_STEP = 0, JOB_RUN = 1, JOB_ADDS = 2 };

/* Claim and run chunks until none is left; returns how many this thread ran. */
static int drain(pool_t *p) {
    int ran = 0;
    for (;;) {
        const int c = atomic_fetch_add_explicit(&p->next, 1, memory_order_acq_rel);
        if (c >= p->chunks) return ran;
        if (p->mode == JOB_ADDS) {
            const double r = add_loop(p->iters, p->width);
            if (r == 12345.678) p->sink = r;  /* keeps the loop */
        } else {
            const int B = p->net->batch, b0 = c * p->chunk;
            const int b1 = b0 + p->chunk < B ? b0 + p->chunk : B;
            if (p->mode == JOB_RUN) run_chunk(p->net, b0, b1, p->T, p->x, p->out, p->spk, p->complement);
            else run_samples(p->net, b0, b1, p->t, p->x, p->out);
        }
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

/* Hand a job of `chunks` pieces to the pool and take part; returns when all are done. */
static void pool_run(pool_t *p) {
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
    p->mode = JOB_STEP;
    p->chunk = (net->batch + 4 * threads - 1) / (4 * threads);
    p->chunks = (net->batch + p->chunk - 1) / p->chunk;
    pool_run(p);
}

/* All T steps of the batch from the reset state (snn_reset first): out[b][j] = the sum
 * over the steps of the last layer's output j. x: uint8 spikes [T, batch, n_in0] (host
 * encoding) or NULL (device encoding). spk[l] += the weight rows layer l added. The
 * membranes in net->v are not touched. complement (2 <= T <= 64): every layer but the
 * output adds its bright inputs once per tile and subtracts them where silent -- fewer rows, the same
 * sums in another order; 0: exactly snn_step's arithmetic. */
void snn_run(const net_t *net, void *pool, int T, const uint8_t *x, float *out, int64_t *spk, int complement) {
    pool_t *p = (pool_t *)pool;
    const int B = net->batch;
    if (!p || p->workers == 0 || B < 2) {
        for (int b0 = 0; b0 < B; b0 += 8) run_chunk(net, b0, b0 + 8 < B ? b0 + 8 : B, T, x, out, spk, complement);
        return;
    }
    const int threads = p->workers + 1;
    p->net = net;
    p->x = x;
    p->out = out;
    p->mode = JOB_RUN;
    p->T = T;
    p->spk = spk;
    p->complement = complement;
    p->chunk = (B + 2 * threads - 1) / (2 * threads);
    p->chunks = (B + p->chunk - 1) / p->chunk;
    pool_run(p);
}

/* Float adds per second on all the pool's threads at once, each running `iters` x 16
 * register-resident adds of `width`-float vectors (8: the kernels' vectors; 16: AVX-512). */
double snn_add_rate(void *pool, int64_t iters, int width) {
    pool_t *p = (pool_t *)pool;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int threads = 1;
    if (!p || p->workers == 0) {
        volatile double r = add_loop(iters, width);
        (void)r;
    } else {
        threads = p->workers + 1;
        p->mode = JOB_ADDS;
        p->iters = iters;
        p->width = width;
        p->chunks = threads;
        pool_run(p);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return dt > 0 ? (double)threads * (double)iters * 16.0 * (double)width / dt : 0.0;
}
