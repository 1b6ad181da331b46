/* Helpers shared by every snn_lab kernel library: 8-float vectors and the packed weight
 * layout. Everything is static inline, so each library gets its own copy and only what it
 * uses. Libraries are built with -ffp-contract=off and without fast-math: the arithmetic
 * below rounds exactly like the PyTorch operations it replaces. */
#ifndef SNN_LAB_COMMON_H
#define SNN_LAB_COMMON_H

#include <stdint.h>
#include <string.h>

/* 8-float vectors (GCC/Clang vector extensions: AVX on x86-64 with -march=native, pairs
   of NEON registers on arm64). Loads/stores go through memcpy: no alignment or aliasing
   assumptions. */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

/* 16-float vectors: one AVX-512 register -- twice the adds per instruction where the
   machine has the full-width units. */
typedef float v16f __attribute__((vector_size(64)));

/* The one switch between the two: WIDE16 is 1 where the compiler targets AVX-512. Without
   it, kernels keep 16-float vectors out of arrays and use 8-float accumulators instead
   (GCC lowers an array of 16-float vectors through the stack there: load-add-store per
   add, 3-5x slower). Both ways add the same terms per lane in the same order. */
#ifdef __AVX512F__
#define WIDE16 1
#else
#define WIDE16 0
#endif

static inline v8f ld(const float *p) { v8f v; memcpy(&v, p, 32); return v; }
static inline v16f ld16(const float *p) { v16f v; memcpy(&v, p, 64); return v; }
static inline void st16(float *p, v16f v) { memcpy(p, &v, 64); }
static inline void st(float *p, v8f v) { memcpy(p, &v, 32); }
/* A 64-float tile row as RV vectors of RW floats: four 16-float ones with WIDE16, else
   eight 8-float ones. */
#if WIDE16
typedef v16f rv;
typedef int32_t rvi __attribute__((vector_size(64)));
#define RV 4
#define RW 16
#define rld ld16
#define rst st16
#else
typedef v8f rv;
typedef v8i rvi;
#define RV 8
#define RW 8
#define rld ld
#define rst st
#endif
static inline v8f splat(float x) { v8f v = {x, x, x, x, x, x, x, x}; return v; }
static inline v8f mask_to(v8i m, float x) { return (v8f)(m & (v8i)splat(x)); } /* m ? x : 0 */
static inline v8f vabs(v8f v) { return (v8f)((v8i)v & (v8i){0x7fffffff, 0x7fffffff,
    0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff}); }

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- packed weights ---------------------------------------------------------------------
   A[K, N] (in practice W^T) is stored by column tiles: the tile of columns [c0, c0 + w) is
   one contiguous [K][w] block at offset c0 * K, zero beyond column N. A tile stays in L2
   while the inputs stream by (rows of W^T with a power-of-two stride would collide in the
   cache sets instead). Tiles are TILE wide (8 vectors, one register block) while a whole
   one fits in the padded width npad, then VEC wide: the engine pads npad to TILE (all tiles
   full), the deploy kernel only to VEC (narrow tail tiles, less work on padding). */
#define TILE 64
#define VEC 8

/* The bias of the column tile [n0, n0 + nb) padded to TILE with zeros (NULL: no bias). */
static inline void tile_bias(float *bt, const float *bias, int64_t n0, int64_t nb) {
    for (int64_t j = 0; j < TILE; j++) bt[j] = (bias && j < nb) ? bias[n0 + j] : 0.0f;
}

static inline int64_t tile_width(int64_t c0, int64_t npad) { return c0 + TILE <= npad ? TILE : VEC; }

/* Row k of the tile at column c0 (width w) from row-major A[K, N]. */
static inline void pack_tile_row(const float *A, float *Ap, int64_t K, int64_t N, int64_t c0,
                                 int64_t w, int64_t k) {
    const int64_t nb = min64(w, N - c0);
    float *dst = Ap + c0 * K + k * w;
    const float *src = A + k * N + c0;
    for (int64_t j = 0; j < nb; j++) dst[j] = src[j];
    for (int64_t j = nb; j < w; j++) dst[j] = 0.0f;
}

/* The whole tile at column c0 from W[N, K] (nn.Linear's layout, A = W^T) without forming
   the transpose. */
static inline void pack_tile_t(const float *W, float *Ap, int64_t K, int64_t N, int64_t c0, int64_t w) {
    const int64_t nb = min64(w, N - c0);
    float *dst = Ap + c0 * K;
    if (nb < w) memset(dst, 0, sizeof(float) * (size_t)(K * w));
    for (int64_t j = 0; j < nb; j++) {
        const float *src = W + (c0 + j) * K;
        for (int64_t k = 0; k < K; k++) dst[k * w + j] = src[k];
    }
}

/* Ask for the T rows p, p + stride, ... (n floats each) ahead of their use: the rows of
   one sample in a [T, B, N] tensor lie B * N floats apart, too far for the hardware
   prefetchers, so a sample's rows otherwise arrive one memory latency at a time (one
   Xeon, snn_tm_wgrad over an all-zero [4000, 512] gradient: 3.2 ms without, 0.8 ms with). */
static inline void prefetch_rows(const float *p, int64_t stride, int64_t T, int64_t n) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < n; j += 16) __builtin_prefetch(p + t * stride + j, 0, 3);
}

#endif
