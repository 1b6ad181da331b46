/* snn_lab engine kernels: sparse spike matmuls (CSR and temporal-mask layouts) and the
 * LIF scan, forward and backward, on raw float32 buffers.
 *
 * Plain C + OpenMP, no PyTorch headers, so it builds in about a second with any C
 * compiler; without OpenMP it runs single-threaded. Built with -ffp-contract=off (no fused
 * multiply-add), so the LIF forward rounds exactly like the tutorial's
 * v * (1 - last) * decay + x.
 */
#include <math.h>
#include <stdlib.h>

#include "common.h"
#ifdef __x86_64__
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
static int omp_get_num_threads(void) { return 1; }
#endif

/* Threads split the work statically and each runs to the end on its own share: no
   barriers inside a kernel, which matters when the cores are shared with other
   processes (a barrier then waits for a descheduled thread). */
#define SHARE(n, lo, hi) \
    const int64_t lo = (int64_t)(n) * omp_get_thread_num() / omp_get_num_threads(); \
    const int64_t hi = (int64_t)(n) * (omp_get_thread_num() + 1) / omp_get_num_threads();

static inline int lane_any(v8i m) {
    int any = 0;
    for (int q = 0; q < 8; q++) any |= m[q] != 0;
    return any;
}

/* ---- compressed rows of a binary float32 matrix X[M, K] ----------------------------
   snn_csr_count: row_ptr[m + 1] = number of non-zeros of row m, then a prefix sum.
   Returns the total, or -1 when some entry is neither 0 nor 1 (not a spike matrix). */
int64_t snn_csr_count(const float *X, int64_t M, int64_t K, int64_t *row_ptr, int nt) {
    int bad = 0;
    #pragma omp parallel for num_threads(nt) schedule(static) reduction(|:bad)
    for (int64_t m = 0; m < M; m++) {
        const float *x = X + m * K;
        int32_t c = 0, b = 0;
        for (int64_t k = 0; k < K; k++) {
            float v = x[k];
            c += (v != 0.0f);
            b |= (v != 0.0f) & (v != 1.0f);
        }
        row_ptr[m + 1] = c;
        bad |= b;
    }
    if (bad) return -1;
    row_ptr[0] = 0;
    for (int64_t m = 0; m < M; m++) row_ptr[m + 1] += row_ptr[m];
    return row_ptr[M];
}

/* col[row_ptr[m] ..] = the column indices of row m's non-zeros, ascending. Branch-free:
   every index is written, the cursor only advances past non-zeros. The row's last slot
   may be written one past its end, so col has one spare slot at the very end. */
void snn_csr_fill(const float *X, int64_t M, int64_t K, const int64_t *row_ptr,
                  int32_t *col, int nt) {
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *x = X + m * K;
        int64_t n = row_ptr[m];
        const int64_t end = row_ptr[m + 1];
        for (int64_t k = 0; k < K && n < end; k++) {
            col[n] = (int32_t)k;
            n += (x[k] != 0.0f);
        }
    }
}

/* ---- out[M, N] = X @ W^T + bias for binary X in CSR form -------------------------
   Each output row is the sum of the rows of W^T its spikes select (gather-accumulate).
   Wp holds W^T packed by full column tiles, Wp[tile][k][TILE] (the layout of common.h
   with the width padded to TILE). */
void snn_pack_tiles(const float *A, float *Ap, int64_t K, int64_t N, int nt) {
    /* A[K, N] -> Ap[ceil(N / TILE)][K][TILE], zero-padded */
    int64_t ntiles = (N + TILE - 1) / TILE;
    #pragma omp parallel for num_threads(nt) schedule(static) collapse(2)
    for (int64_t ti = 0; ti < ntiles; ti++)
        for (int64_t k = 0; k < K; k++) pack_tile_row(A, Ap, K, N, ti * TILE, TILE, k);
}

/* The same tiles straight from W[N, K] (nn.Linear's layout), without forming W^T. */
void snn_pack_tiles_t(const float *W, float *Ap, int64_t K, int64_t N, int nt) {
    int64_t ntiles = (N + TILE - 1) / TILE;
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t ti = 0; ti < ntiles; ti++) pack_tile_t(W, Ap, K, N, ti * TILE, TILE);
}

/* A^T[N, K] from the tiles of A[K, N]: a weight gradient computed as dW^T tiles, written in
   nn.Linear's [out, in] layout (a transposed view would cost the autograd engine a copy of
   the whole gradient). Per tile, its columns become rows; the tile stays in L2 meanwhile. */
void snn_unpack_tiles_t(const float *Ap, float *At, int64_t K, int64_t N, int nt) {
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const int64_t ti = n / TILE, j = n % TILE;
        const float *src = Ap + ti * K * TILE + j;
        float *dst = At + n * K;
        for (int64_t k = 0; k < K; k++) dst[k] = src[k * TILE];
    }
}

void snn_spmm_fwd(const int64_t *row_ptr, const int32_t *col, const float *Wp, int64_t K,
                  const float *bias, float *out, int64_t M, int64_t N, int nt) {
    const int64_t ntiles = (N + TILE - 1) / TILE;
    #pragma omp parallel num_threads(nt)
    {
        SHARE(M, m0, m1)
        for (int64_t ti = 0; ti < ntiles; ti++) {
            const int64_t n0 = ti * TILE, nb = min64(TILE, N - n0);
            const float *Wt = Wp + ti * K * TILE;
            float b[TILE];
            tile_bias(b, bias, n0, nb);
            for (int64_t m = m0; m < m1; m++) {
                v8f a0 = ld(b), a1 = ld(b + 8), a2 = ld(b + 16), a3 = ld(b + 24);
                v8f a4 = ld(b + 32), a5 = ld(b + 40), a6 = ld(b + 48), a7 = ld(b + 56);
                const int64_t p1 = row_ptr[m + 1];
                for (int64_t p = row_ptr[m]; p < p1; p++) {
                    const float *w = Wt + (int64_t)col[p] * TILE;
                    a0 += ld(w); a1 += ld(w + 8); a2 += ld(w + 16); a3 += ld(w + 24);
                    a4 += ld(w + 32); a5 += ld(w + 40); a6 += ld(w + 48); a7 += ld(w + 56);
                }
                float *o = out + m * N + n0;
                if (nb == TILE) {
                    st(o, a0); st(o + 8, a1); st(o + 16, a2); st(o + 24, a3);
                    st(o + 32, a4); st(o + 40, a5); st(o + 48, a6); st(o + 56, a7);
                } else {
                    float tmp[TILE];
                    st(tmp, a0); st(tmp + 8, a1); st(tmp + 16, a2); st(tmp + 24, a3);
                    st(tmp + 32, a4); st(tmp + 40, a5); st(tmp + 48, a6); st(tmp + 56, a7);
                    for (int64_t j = 0; j < nb; j++) o[j] = tmp[j];
                }
            }
        }
    }
}

/* ---- X^T @ G for binary X in CSR form, into tiles dWp[tile][k][TILE] (zeroed) -------
   Scatter: each gradient row is added to the rows of dW^T its spikes select. Threads
   own column tiles, so the updates never conflict. */
void snn_spmm_wgrad(const int64_t *row_ptr, const int32_t *col, const float *G,
                    float *dWp, int64_t K, int64_t M, int64_t N, int nt) {
    const int64_t ntiles = (N + TILE - 1) / TILE;
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t ti = 0; ti < ntiles; ti++) {
        const int64_t n0 = ti * TILE, nb = min64(TILE, N - n0);
        float *Dt = dWp + ti * K * TILE;
        float gr[TILE];
        for (int64_t m = 0; m < M; m++) {
            const int64_t p0 = row_ptr[m], p1 = row_ptr[m + 1];
            if (p0 == p1) continue;
            const float *g = G + m * N + n0;
            if (nb < TILE) {
                for (int j = 0; j < TILE; j++) gr[j] = j < nb ? g[j] : 0.0f;
                g = gr;
            }
            v8f g0 = ld(g), g1 = ld(g + 8), g2 = ld(g + 16), g3 = ld(g + 24);
            v8f g4 = ld(g + 32), g5 = ld(g + 40), g6 = ld(g + 48), g7 = ld(g + 56);
            for (int64_t p = p0; p < p1; p++) {
                float *d = Dt + (int64_t)col[p] * TILE;
                st(d, ld(d) + g0); st(d + 8, ld(d + 8) + g1);
                st(d + 16, ld(d + 16) + g2); st(d + 24, ld(d + 24) + g3);
                st(d + 32, ld(d + 32) + g4); st(d + 40, ld(d + 40) + g5);
                st(d + 48, ld(d + 48) + g6); st(d + 56, ld(d + 56) + g7);
            }
        }
    }
}

/* ---- spike trains grouped per sample: the temporal layout ------------------------
   For an input X[T, B, K] of spikes, each (sample b, input k) that spikes at least once
   becomes one pair (k, mask): bit t of mask is X[t, b, k] (T <= 64). Rate-coded inputs
   repeat a pixel's spike over many steps, so there are far fewer pairs than spikes, and
   the products below touch each weight row once per pair instead of once per spike:
     out[t, b] = sum over pairs with bit t       of W^T[k]
               = Wsum_b - sum over pairs without bit t of W^T[k]   (Wsum_b: all pairs of b)
   using whichever side has fewer steps ("complement" when more than half are set).
   snn_tm_count: per-(b, k) masks into Mk[B, K] and the pair count of each sample;
   returns the number of pairs (-1: an entry is neither 0 nor 1); *nspikes = spike count. */
int64_t snn_tm_count(const float *X, int64_t T, int64_t B, int64_t K, uint64_t *Mk,
                     int64_t *row_ptr, int64_t *nspikes, int nt) {
    int bad = 0;
    int64_t spikes = 0;
    #pragma omp parallel num_threads(nt) reduction(|:bad) reduction(+:spikes)
    {
        SHARE(B, b0, b1)
        for (int64_t b = b0; b < b1; b++) {
            uint64_t *mb = Mk + b * K;
            for (int64_t k = 0; k < K; k++) mb[k] = 0;
            int32_t bb = 0;
            for (int64_t t = 0; t < T; t++) {
                const float *x = X + (t * B + b) * K;
                const uint64_t bit = (uint64_t)1 << t;
                for (int64_t k = 0; k < K; k++) {
                    float v = x[k];
                    mb[k] |= (v != 0.0f) ? bit : 0;
                    bb |= (v != 0.0f) & (v != 1.0f);
                }
            }
            int64_t c = 0;
            for (int64_t k = 0; k < K; k++) {
                c += mb[k] != 0;
                spikes += __builtin_popcountll(mb[k]);
            }
            row_ptr[b + 1] = c;
            bad |= bb;
        }
    }
    *nspikes = spikes;
    if (bad) return -1;
    row_ptr[0] = 0;
    for (int64_t b = 0; b < B; b++) row_ptr[b + 1] += row_ptr[b];
    return row_ptr[B];
}

void snn_tm_fill(const uint64_t *Mk, int64_t B, int64_t K, const int64_t *row_ptr,
                 int32_t *cols, uint64_t *masks, int nt) {
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        int64_t p = row_ptr[b];
        const uint64_t *mb = Mk + b * K;
        for (int64_t k = 0; k < K; k++)
            if (mb[k]) { cols[p] = (int32_t)k; masks[p] = mb[k]; p++; }
    }
}

/* Whole tile rows in RV vectors of RW floats (common.h). */
#define R_LOAD(r, p) rv r[RV]; for (int q_ = 0; q_ < RV; q_++) r[q_] = rld((p) + RW * q_)
#define R_ZERO(r) rv r[RV]; for (int q_ = 0; q_ < RV; q_++) r[q_] = (rv){0}
#define R_ACC(p, OP, r) do { float *p_ = (p); \
    for (int q_ = 0; q_ < RV; q_++) rst(p_ + RW * q_, rld(p_ + RW * q_) OP r[q_]); } while (0)

/* snn_tm_fwd for a single column tile (a readout): per pair, its weight row is loaded once
   and added to (or, bright, subtracted from) a [T][tile] buffer at its steps -- no lists
   to build, which one tile would not repay. */
static void tm_fwd_rmw(const int64_t *row_ptr, const int32_t *cols, const uint64_t *masks,
                       const float *Wp, int64_t K, const float *bias, float *out,
                       int64_t T, int64_t B, int64_t N, int nt) {
    const int64_t ntiles = (N + TILE - 1) / TILE;
    const uint64_t full = T >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << T) - 1);
    #pragma omp parallel num_threads(nt)
    {
        SHARE(B, b0, b1)
        float acc[64 * TILE];
        for (int64_t ti = 0; ti < ntiles; ti++) {
            const int64_t n0 = ti * TILE, nb = min64(TILE, N - n0);
            const float *Wt = Wp + ti * K * TILE;
            float bt[TILE];
            tile_bias(bt, bias, n0, nb);
            for (int64_t b = b0; b < b1; b++) {
                memset(acc, 0, sizeof(float) * (size_t)(T * TILE));
                R_ZERO(sum);
                for (int64_t p = row_ptr[b]; p < row_ptr[b + 1]; p++) {
                    const float *wrow = Wt + (int64_t)cols[p] * TILE;
                    R_LOAD(w, wrow);
                    uint64_t m = masks[p];
                    if (2 * __builtin_popcountll(m) > T) {
                        for (int q = 0; q < RV; q++) sum[q] += w[q];
                        for (m = ~m & full; m; m &= m - 1)
                            R_ACC(acc + __builtin_ctzll(m) * TILE, -, w);
                    } else {
                        for (; m; m &= m - 1)
                            R_ACC(acc + __builtin_ctzll(m) * TILE, +, w);
                    }
                }
                float base[TILE];
                for (int q = 0; q < RV; q++) rst(base + RW * q, rld(bt + RW * q) + sum[q]);
                for (int64_t t = 0; t < T; t++) {
                    float *o = out + (t * B + b) * N + n0;
                    const float *a = acc + t * TILE;
                    if (nb == TILE) {
                        for (int j = 0; j < TILE; j += RW) rst(o + j, rld(base + j) + rld(a + j));
                    } else {
                        for (int64_t j = 0; j < nb; j++) o[j] = base[j] + a[j];
                    }
                }
            }
        }
    }
}

/* The first nb (<= TILE) floats of a tile row held in RV vectors, written to dst. */
static inline void store_tile_row(float *dst, const rv *r, int64_t nb) {
    if (nb == TILE) {
        for (int q = 0; q < RV; q++) rst(dst + RW * q, r[q]);
    } else {
        float tmp[TILE];
        for (int q = 0; q < RV; q++) rst(tmp + RW * q, r[q]);
        for (int64_t j = 0; j < nb; j++) dst[j] = tmp[j];
    }
}

/* out[T*B, N] (rows t-major, like X) = X @ W^T + bias from the pairs; Wp = packed W^T.
   A pair that fires at most half of the steps adds its weight row at the steps it fires;
   one firing at more ("bright") adds it once to the sample's base and subtracts it at the
   steps it stays silent. Each thread first turns its samples' pairs into per-(sample, step)
   lists of signed rows (k, sign in bit 31), in pair order; then, tile by tile (a tile of W^T
   stays in L2), an output row is summed in registers from its list and written once --
   loads and adds only, where a read-modify-write per spike of a [T][tile] buffer was bound
   by stores. The additions per lane are those of that buffer, in its order: same floats.
   Returns 0, or -1 when a thread's lists could not be allocated (out is then incomplete).
   With one column tile (N <= 64) the lists are not repaid: tm_fwd_rmw.
   lif = 1 (hard reset) or 2 (subtract): the LIF scan of snn_lif_fwd runs on each current
   row as it is summed, from a zero membrane: out gets the membranes V, S the spikes --
   the floats of snn_tm_fwd followed by snn_lif_fwd, without storing and re-reading the
   current. (Returns -2 with one column tile: the caller scans separately.) */
#define SIGN_BIT ((int32_t)0x80000000)

int snn_tm_fwd(const int64_t *row_ptr, const int32_t *cols, const uint64_t *masks,
               const float *Wp, int64_t K, const float *bias, float *out,
               int64_t T, int64_t B, int64_t N, int nt, int lif, float vth, float decay, float *S) {
    const int64_t ntiles = (N + TILE - 1) / TILE;
    const uint64_t full = T >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << T) - 1);
    int failed = 0;
    if (ntiles < 2) {
        if (lif) return -2;  /* the caller scans the current itself */
        tm_fwd_rmw(row_ptr, cols, masks, Wp, K, bias, out, T, B, N, nt);
        return 0;
    }
    #pragma omp parallel num_threads(nt)
    {
        SHARE(B, b0, b1)
        const int64_t nb_s = b1 - b0;
        /* the lists: off[(b - b0) * T + t] .. off[... + 1] index ent */
        int64_t *off = calloc((size_t)(nb_s * T + 1), sizeof(int64_t)), *cur = NULL;
        int32_t *ent = NULL;
        if (off) {
            for (int64_t b = b0; b < b1; b++)
                for (int64_t p = row_ptr[b]; p < row_ptr[b + 1]; p++) {
                    const uint64_t m = masks[p];
                    const uint64_t e = 2 * __builtin_popcountll(m) > T ? ~m & full : m;
                    for (uint64_t r = e; r; r &= r - 1) off[(b - b0) * T + __builtin_ctzll(r) + 1]++;
                }
            for (int64_t i = 0; i < nb_s * T; i++) off[i + 1] += off[i];
            ent = malloc(sizeof(int32_t) * (size_t)(off[nb_s * T] ? off[nb_s * T] : 1));
            cur = malloc(sizeof(int64_t) * (size_t)(T ? T : 1));
        }
        if (!(off && ent && cur)) {
            #pragma omp atomic write
            failed = 1;
        } else {
            for (int64_t b = b0; b < b1; b++) {
                for (int64_t t = 0; t < T; t++) cur[t] = off[(b - b0) * T + t];
                for (int64_t p = row_ptr[b]; p < row_ptr[b + 1]; p++) {
                    const uint64_t m = masks[p];
                    const int bright = 2 * __builtin_popcountll(m) > T;
                    const int32_t v = cols[p] | (bright ? SIGN_BIT : 0);
                    for (uint64_t r = bright ? ~m & full : m; r; r &= r - 1) ent[cur[__builtin_ctzll(r)]++] = v;
                }
            }
            for (int64_t ti = 0; ti < ntiles; ti++) {
                const int64_t n0 = ti * TILE, nb = min64(TILE, N - n0);
                const float *Wt = Wp + ti * K * TILE;
                float bt[TILE];
                tile_bias(bt, bias, n0, nb);
                for (int64_t b = b0; b < b1; b++) {
                    R_ZERO(sum);
                    for (int64_t p = row_ptr[b]; p < row_ptr[b + 1]; p++)
                        if (2 * __builtin_popcountll(masks[p]) > T) {
                            const float *w = Wt + (int64_t)cols[p] * TILE;
                            for (int q = 0; q < RV; q++) sum[q] += rld(w + RW * q);
                        }
                    rv base[RV];
                    for (int q = 0; q < RV; q++) base[q] = rld(bt + RW * q) + sum[q];
                    const int64_t *ob = off + (b - b0) * T;
                    R_ZERO(v);  /* lif: the membranes of the tile's neurons, from zero */
                    for (int64_t t = 0; t < T; t++) {
                        R_ZERO(a);
                        for (int64_t e = ob[t]; e < ob[t + 1]; e++) {
                            const int32_t v = ent[e];
                            const float *w = Wt + (int64_t)(v & ~SIGN_BIT) * TILE;
                            const rvi sg = (rvi){0} + (v & SIGN_BIT);  /* x + (-w) == x - w */
                            for (int q = 0; q < RV; q++) a[q] += (rv)((rvi)rld(w + RW * q) ^ sg);
                        }
                        float *o = out + (t * B + b) * N + n0;
                        for (int q = 0; q < RV; q++) a[q] = base[q] + a[q];  /* the current */
                        if (lif) {
                            /* the LIF scan's step (snn_lif_fwd), its operations in its order:
                               out gets the membrane, S the spikes, the current is never stored */
                            const rv VTHv = (rv){0} + vth, DECv = (rv){0} + decay, ONEv = (rv){0} + 1.0f;
                            float *so = S + (t * B + b) * N + n0;
                            rv sp[RV];
                            for (int q = 0; q < RV; q++) {
                                const rvi fired = v[q] > VTHv;
                                rv u = lif == 1 ? v[q] * (rv)(~fired & (rvi)ONEv) : v[q] - VTHv * (rv)(fired & (rvi)ONEv);
                                u = u * DECv;
                                v[q] = u + a[q];
                                a[q] = v[q];
                                sp[q] = (rv)((v[q] > VTHv) & (rvi)ONEv);
                            }
                            store_tile_row(so, sp, nb);
                        }
                        store_tile_row(o, a, nb);
                    }
                }
            }
        }
        free(cur);
        free(ent);
        free(off);
    }
    return failed ? -1 : 0;  /* -1: a thread's lists could not be allocated */
}

/* dW^T tiles (zeroed by the caller) += X^T @ G from the pairs; G[T*B, N] t-major.
   Per (b, tile) the T gradient rows stay in L1; each pair does one read-modify-write
   of its dW^T row. Threads own column tiles. db (or NULL): the bias gradient, G's column
   sums, taken from the rows while they are in L1 anyway (per sample over its T steps in
   floats, over samples in doubles): one pass over G less than a separate sum. */
void snn_tm_wgrad(const int64_t *row_ptr, const int32_t *cols, const uint64_t *masks,
                  const float *G, float *dWp, float *db, int64_t K, int64_t T, int64_t B, int64_t N,
                  int nt) {
    const int64_t ntiles = (N + TILE - 1) / TILE;
    const uint64_t full = T >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << T) - 1);
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t ti = 0; ti < ntiles; ti++) {
        const int64_t n0 = ti * TILE, nb = min64(TILE, N - n0);
        float *Dt = dWp + ti * K * TILE;
        float gb[64 * TILE];
        double colsum[TILE] = {0};
        for (int64_t b = 0; b < B; b++) {
            const int64_t p0 = row_ptr[b], p1 = row_ptr[b + 1];
            if (b + 1 < B) prefetch_rows(G + (b + 1) * N + n0, B * N, T, nb);
            if (p0 == p1 && !db) continue;
            R_ZERO(cs);
            uint64_t live = 0;  /* bit t: row t of this tile has a non-zero entry */
            for (int64_t t = 0; t < T; t++) {  /* this sample's gradient rows, padded */
                const float *g = G + (t * B + b) * N + n0;
                float *d = gb + t * TILE;
                if (nb == TILE) memcpy(d, g, sizeof(float) * TILE);
                else for (int j = 0; j < TILE; j++) d[j] = j < nb ? g[j] : 0.0f;
                rvi nz = (rvi){0};
                for (int q = 0; q < RV; q++) nz |= (rvi)rld(d + RW * q) & 0x7fffffff;
                int any = 0;
                for (int q = 0; q < RW; q++) any |= nz[q] != 0;
                live |= (uint64_t)any << t;
                if (db) for (int q = 0; q < RV; q++) cs[q] += rld(d + RW * q);
            }
            if (db) {
                float part[TILE];
                for (int q = 0; q < RV; q++) rst(part + RW * q, cs[q]);
                for (int j = 0; j < TILE; j++) colsum[j] += (double)part[j];
            }
            /* Rows that are all zero add nothing (x + 0 == x, x - 0 == x): skipped, the
               same floats. A surrogate window that is zero for every neuron of a tile at a
               step -- common in trained networks -- leaves such rows. */
            if (p0 == p1 || !live) continue;
            int have_sum = db != 0;  /* the T rows' sum for bright pairs: cs (the same adds) */
            rv sum[RV];
            for (int q = 0; q < RV; q++) sum[q] = db ? cs[q] : (rv){0};
            for (int64_t p = p0; p < p1; p++) {
                uint64_t m = masks[p];
                rv a[RV];
                if (2 * __builtin_popcountll(m) > T) {
                    if (!have_sum) {
                        for (int64_t t = 0; t < T; t++) {
                            const float *g = gb + t * TILE;
                            for (int q = 0; q < RV; q++) sum[q] += rld(g + RW * q);
                        }
                        have_sum = 1;
                    }
                    for (int q = 0; q < RV; q++) a[q] = sum[q];
                    for (m = ~m & full & live; m; m &= m - 1) {
                        const float *g = gb + __builtin_ctzll(m) * TILE;
                        for (int q = 0; q < RV; q++) a[q] -= rld(g + RW * q);
                    }
                } else {
                    m &= live;
                    if (!m) continue;  /* adds zeros only */
                    for (int q = 0; q < RV; q++) a[q] = (rv){0};
                    for (; m; m &= m - 1) {
                        const float *g = gb + __builtin_ctzll(m) * TILE;
                        for (int q = 0; q < RV; q++) a[q] += rld(g + RW * q);
                    }
                }
                R_ACC(Dt + (int64_t)cols[p] * TILE, +, a);
            }
        }
        if (db)
            for (int64_t j = 0; j < nb; j++) db[n0 + j] = (float)colsum[j];
    }
}

/* ---- LIF scan over T for P independent neurons -----------------------------------
   x, S: [T, P]; V: [T, P] or NULL (inference keeps no history); v0, vlast: [P].
   hard: V = (V * (1 - l)) * decay + x;  subtract: V = (V - vth * l) * decay + x,
   with l = (V_prev > vth) and S[t] = (V_t > vth): the tutorial's operations in the tutorial's
   order (no fused multiply-add), hence the same floats. Time is the outer loop, so
   every pass streams contiguous rows; lanes of 8 neurons, a scalar tail. */
static inline float lif_fwd_1(float v, float x, float vth, float decay, int hard) {
    float a = hard ? v * (v > vth ? 0.0f : 1.0f) : v - vth * (v > vth ? 1.0f : 0.0f);
    a = a * decay;
    return a + x;
}

void snn_lif_fwd(const float *x, const float *v0, float *V, float *S, float *vlast,
                 int64_t T, int64_t P, float vth, float decay, int hard, int64_t xstride, int nt) {
    const v8f VTH = splat(vth), DEC = splat(decay);
    #pragma omp parallel num_threads(nt)
    {
        SHARE(P / 8, b0, b1)
        const int64_t i0 = b0 * 8, i1 = (b1 == P / 8) ? P : b1 * 8;  /* last share: tail */
        for (int64_t t = 0; t < T; t++) {
            const float *vp = t == 0 ? v0 : (V ? V + (t - 1) * P : vlast);
            float *vo = V ? V + t * P : vlast;
            const float *xt = x + t * xstride;  /* xstride 0: the same current every step */
            float *so = S + t * P;
            int64_t i = i0;
            for (; i + 8 <= i1; i += 8) {
                v8f v = ld(vp + i), a;
                v8i fired = v > VTH;
                if (hard) a = v * mask_to(~fired, 1.0f);
                else a = v - VTH * mask_to(fired, 1.0f);
                a = a * DEC;
                a = a + ld(xt + i);
                st(vo + i, a);
                st(so + i, mask_to(a > VTH, 1.0f));
            }
            for (; i < i1; i++) {
                float a = lif_fwd_1(vp[i], xt[i], vth, decay, hard);
                vo[i] = a;
                so[i] = a > vth ? 1.0f : 0.0f;
            }
        }
        if (V)
            for (int64_t i = i0; i < i1; i++) vlast[i] = V[(T - 1) * P + i];
    }
}

/* Surrogate derivative d spike / d u at u = v - vth (kinds: 0 rectangle, 1 triangle,
   2 sigmoid, 3 atan; w = width / slope as in neurons/surrogate.py). */
static inline float sgrad(float u, int kind, float w) {
    switch (kind) {
    case 0: return fabsf(u) < w ? 1.0f / (w * 2.0f) : 0.0f;
    case 1: { float r = 1.0f - fabsf(u) / w; return r > 0.0f ? r / w : 0.0f; }
    case 2: { float s = 1.0f / (1.0f + expf(-w * u)); return w * s * (1.0f - s); }
    default: { float z = 1.5707963267948966f * w * u; return w / (2.0f * (1.0f + z * z)); }
    }
}

/* Backward of snn_lif_fwd: G[t] = dL/dV_t = dL/dx_t.
     G[t] = gS[t] * sg_t + G[t + 1] * A_t   (G[T-1]: gS * sg + gvlast)
     A_t  = decay * ((1 - s_t) - [!detach] V_t * sg_t)   hard
     A_t  = decay * (1 - [!detach] vth * sg_t)           subtract
   gS, gvlast may be NULL (zero). Rectangle, triangle and atan run in 8-lane vectors with
   the scalar path's operations in its order (the same floats); sigmoid (expf) runs scalar. */
static inline float lif_bwd_1(float v, float gs, float gn, int last, float vth, float decay,
                              int hard, int detach, int kind, float w) {
    float sg = sgrad(v - vth, kind, w);
    float g = gs * sg;
    if (last) return g + gn;
    float a;
    if (hard) {
        a = v > vth ? 0.0f : 1.0f;
        if (!detach) a -= v * sg;
    } else {
        a = detach ? 1.0f : 1.0f - vth * sg;
    }
    return g + gn * (a * decay);
}

/* sgrad on 8 lanes for kinds 0, 1, 3 (c = pi/2 * w for atan, h = 1 / (2w) for rectangle). */
static inline v8f sgrad8(v8f u, int kind, v8f W, v8f H, v8f C) {
    const v8f one = splat(1.0f), two = splat(2.0f);
    switch (kind) {
    case 0: return (v8f)((v8i)H & (vabs(u) < W));
    case 1: { v8f r = one - vabs(u) / W; return (v8f)((v8i)(r / W) & (r > splat(0.0f))); }
    default: { v8f z = C * u; return W / (two * (one + z * z)); }
    }
}

typedef double v4d __attribute__((vector_size(32)));

void snn_lif_bwd(const float *V, const float *gS, const float *gvlast, float *G,
                 int64_t T, int64_t P, float vth, float decay, int hard, int detach,
                 int kind, float w, double *gdecay, int nt) {
    const v8f VTH = splat(vth), DEC = splat(decay), W = splat(w), ZERO = splat(0.0f);
    const float h = 1.0f / (w * 2.0f);
    const v8f H = splat(h), C = splat(1.5707963267948966f * w);
    const int vec = kind == 0 || kind == 1 || kind == 3;
    double gd = 0.0;
    #pragma omp parallel num_threads(nt) reduction(+:gd)
    {
        SHARE(P / 8, b0, b1)
        const int64_t i0 = b0 * 8, i1 = (b1 == P / 8) ? P : b1 * 8;
        for (int64_t t = T - 1; t >= 0; t--) {
            const int last = t == T - 1;
            const float *vt = V + t * P, *gt = gS ? gS + t * P : 0;
            const float *gn = last ? gvlast : G + (t + 1) * P;
            float *Gt = G + t * P;
            int64_t i = i0;
            if (vec) {
                for (; i + 8 <= i1; i += 8) {
                    v8f v = ld(vt + i);
                    v8f sg = sgrad8(v - VTH, kind, W, H, C);
                    v8f g = gt ? ld(gt + i) * sg : ZERO;
                    v8f n = gn ? ld(gn + i) : ZERO;
                    if (last) {
                        g = g + n;
                    } else {
                        v8f a;
                        if (hard) {
                            a = mask_to(v <= VTH, 1.0f);
                            if (!detach) a = a - v * sg;
                        } else {
                            a = detach ? splat(1.0f) : splat(1.0f) - VTH * sg;
                        }
                        g = g + n * (a * DEC);
                    }
                    st(Gt + i, g);
                }
            }
            for (; i < i1; i++)
                Gt[i] = lif_bwd_1(vt[i], gt ? gt[i] : 0.0f, gn ? gn[i] : 0.0f, last, vth, decay,
                                  hard, detach, kind, w);
            if (gdecay && t > 0) {
                /* dL/d decay += G[t] * (the previous membrane after its reset) */
                const float *vp = V + (t - 1) * P;
                int64_t k = i0;
                v4d acc_lo = {0.0, 0.0, 0.0, 0.0}, acc_hi = acc_lo;
                for (; k + 8 <= i1; k += 8) {
                    v8f v = ld(vp + k);
                    v8i fired = v > VTH;
                    v8f pre = hard ? (v8f)((v8i)v & ~fired) : v - (v8f)((v8i)VTH & fired);
                    v8f gk = ld(Gt + k);
                    const v4d p_lo = __builtin_convertvector(__builtin_shufflevector(pre, pre, 0, 1, 2, 3), v4d);
                    const v4d p_hi = __builtin_convertvector(__builtin_shufflevector(pre, pre, 4, 5, 6, 7), v4d);
                    const v4d g_lo = __builtin_convertvector(__builtin_shufflevector(gk, gk, 0, 1, 2, 3), v4d);
                    const v4d g_hi = __builtin_convertvector(__builtin_shufflevector(gk, gk, 4, 5, 6, 7), v4d);
                    acc_lo += g_lo * p_lo;
                    acc_hi += g_hi * p_hi;
                }
                for (int q = 0; q < 4; q++) gd += acc_lo[q] + acc_hi[q];
                for (; k < i1; k++) {
                    const float pre = hard ? (vp[k] > vth ? 0.0f : vp[k]) : vp[k] - (vp[k] > vth ? vth : 0.0f);
                    gd += (double)Gt[k] * (double)pre;
                }
            }
        }
    }
    if (gdecay) *gdecay = gd;
}

/* ---- 2-D convolution on binary channels-last inputs (stride 1, no dilation/groups) ----
   The spikes are a CSR index over pixels (snn_csr_count/fill over X[N*H*W, Ci]): row
   (n*H + h)*W + w lists the channels c that fire at that pixel. Forward, output-
   stationary: output pixel (i, j) of image n sums, over the kernel taps (dy, dx) and the
   spikes c of input pixel (i + dy - ph, j + dx - pw), the weight vectors Wt[dy][dx][c][:]
   (all Co outputs, contiguous) -- gather-accumulate, no multiplies, a block of up to 64
   outputs held in registers and written once. Co is a multiple of 8; outputs and
   gradients are channels-last [N][Ho][Wo][Co]. geom = {H, W, Ci, Ho, Wo, Co, kh, kw, ph,
   pw}. */
typedef struct {
    int64_t H, W, Ci, Ho, Wo, Co, kh, kw, ph, pw;
} conv_geom;

typedef uint8_t v8c __attribute__((vector_size(8)));

static inline void vadd_n(float *a, const float *b, int64_t n) {
    int64_t q = 0;
#if WIDE16
    for (; q + 16 <= n; q += 16) st16(a + q, ld16(a + q) + ld16(b + q));
#endif
    for (; q < n; q += 8) st(a + q, ld(a + q) + ld(b + q));
}

static inline conv_geom geom_of(const int64_t *g) {
    const conv_geom r = {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]};
    return r;
}

#define CONV_OUT_BLOCK(NV, cb) do {                                                  \
        v8f a_[NV];                                                                  \
        for (int q = 0; q < NV; q++) a_[q] = bias ? ld(bias + (cb) + 8 * q) : splat(0.0f); \
        for (int64_t dy = dy0; dy < dy1; dy++)                                       \
            for (int64_t dx = dx0; dx < dx1; dx++) {                                 \
                const int64_t pix = (n * g.H + i + dy - g.ph) * g.W + j + dx - g.pw; \
                const float *wtap = Wt + (dy * g.kw + dx) * g.Ci * g.Co + (cb);      \
                for (int64_t e = row_ptr[pix]; e < row_ptr[pix + 1]; e++) {          \
                    const float *w_ = wtap + (int64_t)col[e] * g.Co;                 \
                    for (int q = 0; q < NV; q++) a_[q] += ld(w_ + 8 * q);            \
                }                                                                    \
            }                                                                        \
        for (int q = 0; q < NV; q++) st(o + (cb) + 8 * q, a_[q]);                    \
    } while (0)

/* The same for a 64-output block as 16-float vectors (AVX-512: half the instructions).
   Without WIDE16 (common.h) it is CONV_OUT_BLOCK(8). */
#if !WIDE16
#define CONV_OUT_BLOCK16(cb) CONV_OUT_BLOCK(8, cb)
#else
#define CONV_OUT_BLOCK16(cb) do {                                                    \
        v16f a_[4];                                                                  \
        for (int q = 0; q < 4; q++) a_[q] = bias ? ld16(bias + (cb) + 16 * q) : (v16f){0}; \
        for (int64_t dy = dy0; dy < dy1; dy++)                                       \
            for (int64_t dx = dx0; dx < dx1; dx++) {                                 \
                const int64_t pix = (n * g.H + i + dy - g.ph) * g.W + j + dx - g.pw; \
                const float *wtap = Wt + (dy * g.kw + dx) * g.Ci * g.Co + (cb);      \
                for (int64_t e = row_ptr[pix]; e < row_ptr[pix + 1]; e++) {          \
                    const float *w_ = wtap + (int64_t)col[e] * g.Co;                 \
                    for (int q = 0; q < 4; q++) a_[q] += ld16(w_ + 16 * q);          \
                }                                                                    \
            }                                                                        \
        for (int q = 0; q < 4; q++) st16(o + (cb) + 16 * q, a_[q]);                  \
    } while (0)
#endif

/* Image n's conv output by scattering from the pixels that fire (few of them): zero (or
   bias) the output, then per spiking input pixel and kernel tap add the sum of its
   channels' weight vectors to the tapped output pixel. */
static void conv_image_scatter(const int64_t *row_ptr, const int32_t *col, const float *Wt, const float *bias,
                               float *on, int64_t n, conv_geom g) {
    const int64_t opix = g.Ho * g.Wo;
    if (bias)
        for (int64_t p = 0; p < opix; p++) memcpy(on + p * g.Co, bias, sizeof(float) * (size_t)g.Co);
    else
        memset(on, 0, sizeof(float) * (size_t)(opix * g.Co));
    for (int64_t h = 0; h < g.H; h++)
        for (int64_t w = 0; w < g.W; w++) {
            const int64_t pix = (n * g.H + h) * g.W + w;
            const int64_t e0 = row_ptr[pix], e1 = row_ptr[pix + 1];
            if (e0 == e1) continue;
            for (int64_t dy = 0; dy < g.kh; dy++) {
                const int64_t i = h + g.ph - dy;
                if (i < 0 || i >= g.Ho) continue;
                for (int64_t dx = 0; dx < g.kw; dx++) {
                    const int64_t j = w + g.pw - dx;
                    if (j < 0 || j >= g.Wo) continue;
                    float *o = on + (i * g.Wo + j) * g.Co;
                    const float *wtap = Wt + (dy * g.kw + dx) * g.Ci * g.Co;
                    if (e1 - e0 == 1) {  /* one spiking channel (always, for one input channel) */
                        vadd_n(o, wtap + (int64_t)col[e0] * g.Co, g.Co);
                        continue;
                    }
                    for (int64_t cb = 0; cb < g.Co; cb += 8) {
                        v8f a = ld(o + cb);
                        for (int64_t e = e0; e < e1; e++) a += ld(wtap + (int64_t)col[e] * g.Co + cb);
                        st(o + cb, a);
                    }
                }
            }
        }
}

/* Image n's conv output into on[Ho][Wo][Co]: output-stationary, or scattering from the
   spiking pixels when under a quarter of the pixels fire. (Both add the same terms; the
   order of the additions per output differs.) */
static void conv_image(const int64_t *row_ptr, const int32_t *col, const float *Wt, const float *bias,
                       float *on, int64_t n, conv_geom g) {
    int64_t firing = 0;
    for (int64_t p = n * g.H * g.W; p < (n + 1) * g.H * g.W; p++) firing += row_ptr[p + 1] > row_ptr[p];
    if (4 * firing < g.H * g.W) {
        conv_image_scatter(row_ptr, col, Wt, bias, on, n, g);
        return;
    }
    for (int64_t i = 0; i < g.Ho; i++) {
        /* taps whose input row lies inside the image */
        const int64_t dy0 = g.ph - i > 0 ? g.ph - i : 0, dy1 = min64(g.kh, g.H + g.ph - i);
        for (int64_t j = 0; j < g.Wo; j++) {
            const int64_t dx0 = g.pw - j > 0 ? g.pw - j : 0, dx1 = min64(g.kw, g.W + g.pw - j);
            float *o = on + (i * g.Wo + j) * g.Co;
            int64_t cb = 0;
            for (; cb + 64 <= g.Co; cb += 64) CONV_OUT_BLOCK16(cb);
            for (; cb + 32 <= g.Co; cb += 32) CONV_OUT_BLOCK(4, cb);
            for (; cb < g.Co; cb += 8) CONV_OUT_BLOCK(1, cb);
        }
    }
}

void snn_conv_fwd(const int64_t *row_ptr, const int32_t *col, const float *Wt, const float *bias,
                  float *out, int64_t N, const int64_t *geom, int nt) {
    const conv_geom g = geom_of(geom);
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++) conv_image(row_ptr, col, Wt, bias, out + n * g.Ho * g.Wo * g.Co, n, g);
}

/* the listed rows dtap + col[e] * Co (+ cb) += the NV vectors at gp (+ cb) */
#define CONV_SCATTER_BLOCK(NV, cb) do {                                              \
        v8f g_[NV];                                                                  \
        for (int q = 0; q < NV; q++) g_[q] = ld(gp + (cb) + 8 * q);                  \
        for (int64_t e = e0; e < e1; e++) {                                          \
            float *d_ = dtap + (int64_t)col[e] * g.Co + (cb);                        \
            for (int q = 0; q < NV; q++) st(d_ + 8 * q, ld(d_ + 8 * q) + g_[q]);     \
        }                                                                            \
    } while (0)

#if !WIDE16  /* (see CONV_OUT_BLOCK16) */
#define CONV_SCATTER_BLOCK16(cb) CONV_SCATTER_BLOCK(8, cb)
#else
#define CONV_SCATTER_BLOCK16(cb) do {                                                \
        v16f g_[4];                                                                  \
        for (int q = 0; q < 4; q++) g_[q] = ld16(gp + (cb) + 16 * q);                \
        for (int64_t e = e0; e < e1; e++) {                                          \
            float *d_ = dtap + (int64_t)col[e] * g.Co + (cb);                        \
            for (int q = 0; q < 4; q++) st16(d_ + 16 * q, ld16(d_ + 16 * q) + g_[q]); \
        }                                                                            \
    } while (0)
#endif

/* d[kh][kw][Ci][Co] += image n's share of the weight gradient, gn[Ho][Wo][Co] its output
   gradient: per input pixel and tap the gradient block is loaded once and added to the
   rows of the pixel's spiking channels. */
static void conv_wgrad_image(const int64_t *row_ptr, const int32_t *col, const float *gn, float *d,
                             int64_t n, conv_geom g) {
    for (int64_t h = 0; h < g.H; h++)
        for (int64_t w = 0; w < g.W; w++) {
            const int64_t pix = (n * g.H + h) * g.W + w;
            const int64_t e0 = row_ptr[pix], e1 = row_ptr[pix + 1];
            if (e0 == e1) continue;
            for (int64_t dy = 0; dy < g.kh; dy++) {
                const int64_t i = h + g.ph - dy;
                if (i < 0 || i >= g.Ho) continue;
                for (int64_t dx = 0; dx < g.kw; dx++) {
                    const int64_t j = w + g.pw - dx;
                    if (j < 0 || j >= g.Wo) continue;
                    const float *gp = gn + (i * g.Wo + j) * g.Co;
                    float *dtap = d + (dy * g.kw + dx) * g.Ci * g.Co;
                    int64_t cb = 0;
                    for (; cb + 64 <= g.Co; cb += 64) CONV_SCATTER_BLOCK16(cb);
                    for (; cb + 32 <= g.Co; cb += 32) CONV_SCATTER_BLOCK(4, cb);
                    for (; cb < g.Co; cb += 8) CONV_SCATTER_BLOCK(1, cb);
                }
            }
        }
}

/* The same share, gathered per input channel instead of scattered per spike: the image's
   spikes are regrouped by channel (the pixels where channel c fires, ascending), then for
   each tap and channel the output-gradient rows at the tapped pixels are summed in
   registers and added to d once -- loads and adds, where the scatter read-modified-wrote a
   row of d per spike and tap (bound by stores). The rows are read from a copy of the
   image's output gradient with a border, gp[H + kh - 1][W + kw - 1][Co]: every tap of
   every input pixel lands inside it (outside the output: zeros), so a spike's list entry
   is its pixel's offset there and the inner loop has neither bounds tests nor index
   arithmetic; Co = 128 blocks sum eight (AVX-512) vectors per entry. The terms per entry
   of d are the scatter's plus zeros, in another order (float rounding). gp is zero on
   entry (calloc); every image writes the same region of it. Scratch: cptr[Ci + 1],
   cur[Ci], coff[H * W * Ci]. */
static void conv_wgrad_image_pad(const int64_t *row_ptr, const int32_t *col, const float *gn, float *d,
                                 int64_t n, conv_geom g, float *gp, int32_t *cptr, int32_t *cur, int32_t *coff) {
    const int64_t HW = g.H * g.W, base = n * HW, PH = g.H + g.kh - 1, PW = g.W + g.kw - 1, Co = g.Co;
    /* gp's row and column of output pixel (0, 0) (negative when padding exceeds kernel - 1:
       outputs no input pixel reaches, left out) */
    const int64_t r0 = g.kh - 1 - g.ph, c0 = g.kw - 1 - g.pw;
    const int64_t i0 = r0 < 0 ? -r0 : 0, i1 = min64(g.Ho, PH - r0);
    const int64_t j0 = c0 < 0 ? -c0 : 0, j1 = min64(g.Wo, PW - c0);
    for (int64_t i = i0; i < i1 && j0 < j1; i++)
        memcpy(gp + ((i + r0) * PW + j0 + c0) * Co, gn + (i * g.Wo + j0) * Co, sizeof(float) * (size_t)((j1 - j0) * Co));
    memset(cptr, 0, sizeof(int32_t) * (size_t)(g.Ci + 1));
    for (int64_t e = row_ptr[base]; e < row_ptr[base + HW]; e++) cptr[col[e] + 1]++;
    for (int64_t c = 0; c < g.Ci; c++) cptr[c + 1] += cptr[c];
    memcpy(cur, cptr, sizeof(int32_t) * (size_t)g.Ci);
    for (int64_t h = 0, p = 0; h < g.H; h++)
        for (int64_t w = 0; w < g.W; w++, p++)
            for (int64_t e = row_ptr[base + p]; e < row_ptr[base + p + 1]; e++)
                coff[cur[col[e]]++] = (int32_t)((h * PW + w) * Co);
    for (int64_t dy = 0; dy < g.kh; dy++)
        for (int64_t dx = 0; dx < g.kw; dx++) {
            const float *gt = gp + ((g.kh - 1 - dy) * PW + (g.kw - 1 - dx)) * Co;
            float *dtap = d + (dy * g.kw + dx) * g.Ci * Co;
            for (int64_t c = 0; c < g.Ci; c++) {
                const int32_t e0 = cptr[c], e1 = cptr[c + 1];
                if (e0 == e1) continue;
                float *drow = dtap + c * Co;
                int64_t cb = 0;
#if WIDE16
                for (; cb + 128 <= Co; cb += 128) {
                    v16f a[8];
                    for (int q = 0; q < 8; q++) a[q] = (v16f){0};
                    for (int32_t e = e0; e < e1; e++) {
                        const float *p = gt + coff[e] + cb;
                        for (int q = 0; q < 8; q++) a[q] += ld16(p + 16 * q);
                    }
                    for (int q = 0; q < 8; q++) st16(drow + cb + 16 * q, ld16(drow + cb + 16 * q) + a[q]);
                }
#endif
                for (; cb + 64 <= Co; cb += 64) {
                    R_ZERO(a);
                    for (int32_t e = e0; e < e1; e++) {
                        const float *p = gt + coff[e] + cb;
                        for (int q = 0; q < RV; q++) a[q] += rld(p + RW * q);
                    }
                    R_ACC(drow + cb, +, a);
                }
                for (; cb < Co; cb += 8) {
                    v8f a = splat(0.0f);
                    for (int32_t e = e0; e < e1; e++) a += ld(gt + coff[e] + cb);
                    st(drow + cb, ld(drow + cb) + a);
                }
            }
        }
}

/* dWt = the sum of the per-thread copies dWt_threads[nt][wsize] (one thread's share each). */
static void sum_thread_copies(float *dWt, const float *dWt_threads, int64_t wsize, int nt) {
    #pragma omp parallel num_threads(nt)
    {
        SHARE(wsize, q0, q1)
        for (int64_t e = q0; e < q1; e++) {
            float s = 0.0f;
            for (int k = 0; k < nt; k++) s += dWt_threads[k * wsize + e];
            dWt[e] = s;
        }
    }
}

/* dWt[kh][kw][Ci][Co] = sum over spikes and taps of the output gradient at the tapped
   pixel. Each thread sums its share of the images into its own copy (dWt_threads[nt]
   [kh*kw*Ci*Co], zeroed by the caller), then the copies are added into dWt. */
void snn_conv_wgrad(const int64_t *row_ptr, const int32_t *col, const float *G, float *dWt,
                    float *dWt_threads, int64_t N, const int64_t *geom, int nt) {
    const conv_geom g = geom_of(geom);
    const int64_t wsize = g.kh * g.kw * g.Ci * g.Co, HW = g.H * g.W;
    const int64_t gpsize = (g.H + g.kh - 1) * (g.W + g.kw - 1) * g.Co;
    #pragma omp parallel num_threads(nt)
    {
        float *d = dWt_threads + omp_get_thread_num() * wsize;
        SHARE(N, n0, n1)
        /* the per-channel gather, or (offsets beyond int32, or no memory for its scratch)
           the per-spike scatter */
        int32_t *cs = gpsize < ((int64_t)1 << 31) ? malloc(sizeof(int32_t) * (size_t)(2 * g.Ci + 1 + HW * g.Ci)) : NULL;
        float *gp = cs ? calloc((size_t)gpsize, sizeof(float)) : NULL;
        for (int64_t n = n0; n < n1; n++) {
            const float *gn = G + n * g.Ho * g.Wo * g.Co;
            if (gp) conv_wgrad_image_pad(row_ptr, col, gn, d, n, g, gp, cs, cs + g.Ci + 1, cs + 2 * g.Ci + 1);
            else conv_wgrad_image(row_ptr, col, gn, d, n, g);
        }
        free(gp);
        free(cs);
    }
    sum_thread_copies(dWt, dWt_threads, wsize, nt);
}

/* ---- BatchNorm followed by a 2x2 max-pool, channels-last ----------------------------
   Y[N][H][W][C] (a conv output), C % 8 == 0. The normalisation is a per-channel affine
   map z = y * alpha + beta (BatchNorm's own form, alpha = gamma * invstd, beta = bias -
   mean * alpha), applied to the four window values before taking their max, so the
   full-resolution normalised tensor is never written; arg keeps which window entry won
   (0..3, row-major, the first on ties, like PyTorch's max-pool). Output [N][H/2][W/2][C]. */

/* s[c] += sum, q[c] += sum of squares of the rows of Y[rows][C] (float per row block,
   double across blocks) */
static void stats_rows(const float *Y, int64_t rows, int64_t C, double *s, double *q) {
    for (int64_t c = 0; c < C; c += 8) {
        v8f a = splat(0.0f), b = splat(0.0f);
        for (int64_t r = 0; r < rows; r++) {
            const v8f v = ld(Y + r * C + c);
            a += v;
            b += v * v;
        }
        for (int l = 0; l < 8; l++) {
            s[c + l] += a[l];
            q[c + l] += b[l];
        }
    }
}

/* Per-channel sum and sum of squares over the rows of Y[rows][C] (float within blocks of
   `block` rows, double across). acc holds nt * 2C doubles (zeroed by the caller); on
   return acc[0..C) = sums, acc[C..2C) = squares. */
void snn_bn_stats(const float *Y, int64_t rows, int64_t C, double *acc, int nt) {
    const int64_t block = 64;
    #pragma omp parallel num_threads(nt)
    {
        SHARE((rows + block - 1) / block, k0, k1)
        double *s = acc + (int64_t)omp_get_thread_num() * 2 * C, *q = s + C;
        for (int64_t k = k0; k < k1; k++)
            stats_rows(Y + k * block * C, min64(block, rows - k * block), C, s, q);
    }
    for (int k = 1; k < nt; k++)
        for (int64_t c = 0; c < 2 * C; c++) acc[c] += acc[(int64_t)k * 2 * C + c];
}

/* One image: yn[H][W][C] -> on[H/2][W/2][C], an[...] the winning entries. */
static void bn_pool_image(const float *yn, const float *alpha, const float *beta, float *on, uint8_t *an,
                          int64_t H, int64_t W, int64_t C) {
    const int64_t Ho = H / 2, Wo = W / 2;
    for (int64_t i = 0; i < Ho; i++)
        for (int64_t j = 0; j < Wo; j++) {
            const float *y0 = yn + ((2 * i) * W + 2 * j) * C;
            const float *win[4] = {y0, y0 + C, y0 + W * C, y0 + W * C + C};
            float *o = on + (i * Wo + j) * C;
            uint8_t *a = an + (i * Wo + j) * C;
            for (int64_t c = 0; c < C; c += 8) {
                const v8f al = ld(alpha + c), be = ld(beta + c);
                v8f best = ld(win[0] + c) * al + be;
                v8i which = {0, 0, 0, 0, 0, 0, 0, 0};
                for (int k = 1; k < 4; k++) {
                    const v8f z = ld(win[k] + c) * al + be;
                    const v8i gt = z > best;
                    best = (v8f)(((v8i)z & gt) | ((v8i)best & ~gt));
                    which = (which & ~gt) | (gt & (v8i){k, k, k, k, k, k, k, k});
                }
                st(o + c, best);
                const v8c w8 = __builtin_convertvector(which, v8c);
                memcpy(a + c, &w8, 8);
            }
        }
}

void snn_bn_pool_fwd(const float *Y, const float *alpha, const float *beta, float *out, uint8_t *arg,
                     int64_t N, int64_t H, int64_t W, int64_t C, int nt) {
    const int64_t po = (H / 2) * (W / 2) * C;
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++) bn_pool_image(Y + n * H * W * C, alpha, beta, out + n * po, arg + n * po, H, W, C);
}

/* The window entry arg[c..c+8) of a pooled pixel as 8 lanes (AVX2: one zero-extending
   load; GCC otherwise widens the 8 bytes one by one). */
static inline v8i arg8(const uint8_t *a) {
#ifdef __AVX2__
    const __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)a));
    v8i v;
    memcpy(&v, &w, 32);
    return v;
#else
    v8c w8;
    memcpy(&w8, a, 8);
    return __builtin_convertvector(w8, v8i);
#endif
}

#if WIDE16
typedef int32_t v16i __attribute__((vector_size(64)));
/* arg[c..c+16) as 16 lanes */
static inline v16i arg16(const uint8_t *a) {
    const __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)a));
    v16i v;
    memcpy(&v, &w, 64);
    return v;
}
#endif

/* One image's share of backward pass 1: s[c] += sum of g, q[c] += sum of g * xhat at the
   winning entries (xhat = (y - mean) * invstd). */
/* One block of L channels from c of bn_pool_sums_image, in vectors VF (int lanes VI, loads
   LD, argmax widening ARG): the same code for 16- and 8-lane blocks. */
#define BN_SUMS_BLOCK(VF, VI, LD, ARG, L) do {                                       \
        const VF mu = LD(mean + c), is = LD(invstd + c);                             \
        VF sg = (VF){0}, sx = (VF){0};                                               \
        for (int64_t i = 0; i < Ho; i++) {                                           \
            const float *y0 = yn + 2 * i * W * C + c, *y1 = y0 + W * C;              \
            const float *g = gn + i * Wo * C + c;                                    \
            const uint8_t *w = an + i * Wo * C + c;                                  \
            for (int64_t j = 0; j < Wo; j++, y0 += 2 * C, y1 += 2 * C, g += C, w += C) { \
                const VI wq = ARG(w);                                                \
                VF y = LD(y0);                                                       \
                y = (VF)(((VI)LD(y0 + C) & (wq == 1)) | ((VI)y & ~(wq == 1)));       \
                y = (VF)(((VI)LD(y1) & (wq == 2)) | ((VI)y & ~(wq == 2)));           \
                y = (VF)(((VI)LD(y1 + C) & (wq == 3)) | ((VI)y & ~(wq == 3)));       \
                const VF gv = LD(g);                                                 \
                sg += gv;                                                            \
                sx += gv * ((y - mu) * is);                                          \
            }                                                                        \
        }                                                                            \
        for (int l = 0; l < (L); l++) {                                              \
            s[c + l] += sg[l];                                                       \
            q[c + l] += sx[l];                                                       \
        }                                                                            \
    } while (0)

static void bn_pool_sums_image(const float *yn, const uint8_t *an, const float *gn, const float *mean,
                               const float *invstd, double *s, double *q, int64_t H, int64_t W, int64_t C) {
    const int64_t Ho = H / 2, Wo = W / 2;
    int64_t c = 0;
#if WIDE16
    for (; c + 16 <= C; c += 16) BN_SUMS_BLOCK(v16f, v16i, ld16, arg16, 16);
#endif
    for (; c < C; c += 8) BN_SUMS_BLOCK(v8f, v8i, ld, arg8, 8);
}

/* Backward, pass 1: per-channel sums over the pooled gradient gP of g and of g * xhat at
   the winning entries (what dgamma and the BatchNorm backward need); float per image,
   double across images. acc as in snn_bn_stats. */
void snn_bn_pool_bwd_sums(const float *Y, const uint8_t *arg, const float *gP, const float *mean,
                          const float *invstd, double *acc, int64_t N, int64_t H, int64_t W, int64_t C,
                          int nt) {
    const int64_t po = (H / 2) * (W / 2) * C;
    #pragma omp parallel num_threads(nt)
    {
        SHARE(N, n0, n1)
        double *s = acc + (int64_t)omp_get_thread_num() * 2 * C, *q = s + C;
        for (int64_t n = n0; n < n1; n++)
            bn_pool_sums_image(Y + n * H * W * C, arg + n * po, gP + n * po, mean, invstd, s, q, H, W, C);
    }
    for (int k = 1; k < nt; k++)
        for (int64_t c = 0; c < 2 * C; c++) acc[c] += acc[(int64_t)k * 2 * C + c];
}

/* One block of channels from c of bn_pool_dy_image (vectors as in BN_SUMS_BLOCK). */
#define BN_DY_BLOCK(VF, VI, LD, ST, ARG) do {                                        \
        const VF bb = LD(b + c), kk = LD(k + c), mu = LD(mean + c);                  \
        const VF ag = LD(a + c) * LD(g + c);                                         \
        const VI wq = ARG(w + c);                                                    \
        for (int q = 0; q < 4; q++) {                                                \
            const VF base = bb + kk * (LD(yq[q] + c) - mu);                          \
            const VI hit = wq == q;                                                  \
            ST(dq[q] + c, base + (VF)((VI)ag & hit));                                \
        }                                                                            \
    } while (0)

/* One image of backward pass 2: dn = a * g_full + b + k * (y - mean). A pooled row's two
   input rows are walked by pointer, a window's four entries per block of channels. */
static void bn_pool_dy_image(const float *yn, const uint8_t *an, const float *gn, const float *a,
                             const float *b, const float *k, const float *mean, float *dn, int64_t H,
                             int64_t W, int64_t C) {
    const int64_t Ho = H / 2, Wo = W / 2;
    if (H % 2 || W % 2)  /* pixels no window covers: only the statistics' terms */
        for (int64_t i = 0; i < H; i++)
            for (int64_t j = 0; j < W; j++) {
                if (i < 2 * Ho && j < 2 * Wo) continue;
                for (int64_t c = 0; c < C; c += 8) {
                    const int64_t o = (i * W + j) * C + c;
                    st(dn + o, ld(b + c) + ld(k + c) * (ld(yn + o) - ld(mean + c)));
                }
            }
    for (int64_t i = 0; i < Ho; i++) {
        const float *y0 = yn + 2 * i * W * C, *y1 = y0 + W * C;
        float *d0 = dn + 2 * i * W * C, *d1 = d0 + W * C;
        const float *g = gn + i * Wo * C;
        const uint8_t *w = an + i * Wo * C;
        for (int64_t j = 0; j < Wo; j++, y0 += 2 * C, y1 += 2 * C, d0 += 2 * C, d1 += 2 * C, g += C, w += C) {
            const float *yq[4] = {y0, y0 + C, y1, y1 + C};
            float *dq[4] = {d0, d0 + C, d1, d1 + C};
            int64_t c = 0;
#if WIDE16
            for (; c + 16 <= C; c += 16) BN_DY_BLOCK(v16f, v16i, ld16, st16, arg16);
#endif
            for (; c < C; c += 8) BN_DY_BLOCK(v8f, v8i, ld, st, arg8);
        }
    }
}

/* Backward, pass 2: dY = a * g_full + b + k * (y - mean) per channel, g_full = gP at the
   winning entry of each window, 0 elsewhere (training: a = gamma * invstd, b = -a * sum_g
   / M, k = -a * invstd * sum_gx / M, the BatchNorm backward; eval: b = k = 0). */
void snn_bn_pool_bwd_dy(const float *Y, const uint8_t *arg, const float *gP, const float *a,
                        const float *b, const float *k, const float *mean, float *dY, int64_t N,
                        int64_t H, int64_t W, int64_t C, int nt) {
    const int64_t po = (H / 2) * (W / 2) * C;
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++)
        bn_pool_dy_image(Y + n * H * W * C, arg + n * po, gP + n * po, a, b, k, mean, dY + n * H * W * C, H, W, C);
}

/* ---- conv -> BatchNorm -> 2x2 max-pool on binary inputs that need no gradient --------
   (a network's first conv on encoded spikes). The conv output is never stored: each
   pass recomputes it image by image into a thread-local buffer (a sparse conv is cheap
   next to writing and re-reading a full-resolution tensor). */

/* Per-channel sum and sum of squares of the conv output (acc as in snn_bn_stats). */
void snn_cbp_stats(const int64_t *row_ptr, const int32_t *col, const float *Wt, const float *bias, int64_t N,
                   const int64_t *geom, double *acc, int nt) {
    const conv_geom g = geom_of(geom);
    const int64_t opix = g.Ho * g.Wo;
    #pragma omp parallel num_threads(nt)
    {
        SHARE(N, n0, n1)
        double *s = acc + (int64_t)omp_get_thread_num() * 2 * g.Co, *q = s + g.Co;
        float *buf = (float *)malloc(sizeof(float) * (size_t)(opix * g.Co));
        for (int64_t n = n0; n < n1 && buf; n++) {
            conv_image(row_ptr, col, Wt, bias, buf, n, g);
            stats_rows(buf, opix, g.Co, s, q);
        }
        free(buf);
    }
    for (int k = 1; k < nt; k++)
        for (int64_t c = 0; c < 2 * g.Co; c++) acc[c] += acc[(int64_t)k * 2 * g.Co + c];
}

void snn_cbp_fwd(const int64_t *row_ptr, const int32_t *col, const float *Wt, const float *bias, int64_t N,
                 const int64_t *geom, const float *alpha, const float *beta, float *out, uint8_t *arg, int nt) {
    const conv_geom g = geom_of(geom);
    const int64_t opix = g.Ho * g.Wo, po = (g.Ho / 2) * (g.Wo / 2) * g.Co;
    #pragma omp parallel num_threads(nt)
    {
        float *buf = (float *)malloc(sizeof(float) * (size_t)(opix * g.Co));
        #pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            if (!buf) continue;
            conv_image(row_ptr, col, Wt, bias, buf, n, g);
            bn_pool_image(buf, alpha, beta, out + n * po, arg + n * po, g.Ho, g.Wo, g.Co);
        }
        free(buf);
    }
}

/* Backward pass 1 (as snn_bn_pool_bwd_sums, the conv output recomputed). */
void snn_cbp_bwd_sums(const int64_t *row_ptr, const int32_t *col, const float *Wt, const float *bias, int64_t N,
                      const int64_t *geom, const uint8_t *arg, const float *gP, const float *mean,
                      const float *invstd, double *acc, int nt) {
    const conv_geom g = geom_of(geom);
    const int64_t opix = g.Ho * g.Wo, po = (g.Ho / 2) * (g.Wo / 2) * g.Co;
    #pragma omp parallel num_threads(nt)
    {
        SHARE(N, n0, n1)
        double *s = acc + (int64_t)omp_get_thread_num() * 2 * g.Co, *q = s + g.Co;
        float *buf = (float *)malloc(sizeof(float) * (size_t)(opix * g.Co));
        for (int64_t n = n0; n < n1 && buf; n++) {
            conv_image(row_ptr, col, Wt, bias, buf, n, g);
            bn_pool_sums_image(buf, arg + n * po, gP + n * po, mean, invstd, s, q, g.Ho, g.Wo, g.Co);
        }
        free(buf);
    }
    for (int k = 1; k < nt; k++)
        for (int64_t c = 0; c < 2 * g.Co; c++) acc[c] += acc[(int64_t)k * 2 * g.Co + c];
}

/* Backward pass 2 and the conv's weight gradient: per image the conv output is recomputed,
   its gradient dY formed (as snn_bn_pool_bwd_dy) and scattered into the weight gradient
   (per-thread copies dWt_threads, zeroed by the caller, summed into dWt). */
void snn_cbp_wgrad(const int64_t *row_ptr, const int32_t *col, const float *Wt, const float *bias, int64_t N,
                   const int64_t *geom, const uint8_t *arg, const float *gP, const float *a, const float *b,
                   const float *k, const float *mean, float *dWt, float *dWt_threads, float *dbias, int nt) {
    const conv_geom g = geom_of(geom);
    const int64_t opix = g.Ho * g.Wo, po = (g.Ho / 2) * (g.Wo / 2) * g.Co;
    const int64_t wsize = g.kh * g.kw * g.Ci * g.Co, HW = g.H * g.W;
    const int64_t gpsize = (g.H + g.kh - 1) * (g.W + g.kw - 1) * g.Co;
    #pragma omp parallel num_threads(nt)
    {
        SHARE(N, n0, n1)
        float *d = dWt_threads + omp_get_thread_num() * (wsize + g.Co), *db = d + wsize;
        float *buf = (float *)malloc(sizeof(float) * (size_t)(2 * opix * g.Co)), *dy = buf + opix * g.Co;
        /* the per-channel gather (as snn_conv_wgrad), else the scatter */
        int32_t *cs = gpsize < ((int64_t)1 << 31) ? malloc(sizeof(int32_t) * (size_t)(2 * g.Ci + 1 + HW * g.Ci)) : NULL;
        float *gp = cs ? calloc((size_t)gpsize, sizeof(float)) : NULL;
        for (int64_t n = n0; n < n1 && buf; n++) {
            conv_image(row_ptr, col, Wt, bias, buf, n, g);
            bn_pool_dy_image(buf, arg + n * po, gP + n * po, a, b, k, mean, dy, g.Ho, g.Wo, g.Co);
            if (gp) conv_wgrad_image_pad(row_ptr, col, dy, d, n, g, gp, cs, cs + g.Ci + 1, cs + 2 * g.Ci + 1);
            else conv_wgrad_image(row_ptr, col, dy, d, n, g);
            if (dbias)
                for (int64_t p = 0; p < opix; p++) vadd_n(db, dy + p * g.Co, g.Co);
        }
        free(gp);
        free(cs);
        free(buf);
    }
    #pragma omp parallel num_threads(nt)
    {
        SHARE(wsize + g.Co, q0, q1)
        for (int64_t e = q0; e < q1; e++) {
            float s = 0.0f;
            for (int t = 0; t < nt; t++) s += dWt_threads[t * (wsize + g.Co) + e];
            if (e < wsize) dWt[e] = s;
            else if (dbias) dbias[e - wsize] = s;
        }
    }
}

/* ---- Bernoulli rate coding straight into the temporal layout -----------------------
   A spike train X[t, b, k] = (u[t, b, k] < P[b, k]) grouped per sample as in snn_tm_count
   (Mk[b, k]: bit t set when the pixel fires at step t), without writing X. The uniforms
   u come from U[T, B, K] (the encoder's own draws: the same spikes as encoding first), or,
   with U = NULL, from a counter-based hash of (key, b, t, k), drawn only for P > 0:
     u = (mix(mix(mix(key_lo ^ mix(key_hi + b * 0x9E3779B9)) ^ (t * 0x85EBCA6B +
          0xC2B2AE35)) + k * 0x27D4EB2F) >> 8) / 2^24     (24 random bits, like torch.rand).
   Returns the number of (sample, input) pairs that fire; *nspikes = the spike count. */
static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16; x *= 0x21F0AAADu; x ^= x >> 15; x *= 0x735A2D97u; x ^= x >> 15;
    return x;
}

static inline v8u mix32v(v8u x) {
    x ^= x >> 16; x *= 0x21F0AAADu; x ^= x >> 15; x *= 0x735A2D97u; x ^= x >> 15;
    return x;
}

int64_t snn_bern_tm_count(const float *U, const float *P, uint64_t key, int64_t T, int64_t B, int64_t K,
                          uint64_t *Mk, int64_t *row_ptr, int64_t *nspikes, int nt) {
    int64_t spikes = 0;
    const uint32_t klo = (uint32_t)key, khi = (uint32_t)(key >> 32);
    #pragma omp parallel num_threads(nt) reduction(+:spikes)
    {
        SHARE(B, b0, b1)
        for (int64_t b = b0; b < b1; b++) {
            uint64_t *mb = Mk + b * K;
            const float *p = P + b * K;
            for (int64_t k = 0; k < K; k++) mb[k] = 0;
            if (U) {
                for (int64_t t = 0; t < T; t++) {
                    const float *u = U + (t * B + b) * K;
                    const uint64_t bit = (uint64_t)1 << t;
                    for (int64_t k = 0; k < K; k++) mb[k] |= u[k] < p[k] ? bit : 0;
                }
            } else {
                const uint32_t kb = mix32(klo ^ mix32(khi + (uint32_t)b * 0x9E3779B9u));
                const v8f scale = splat(1.0f / 16777216.0f);
                const v8u lane = {0, 1, 2, 3, 4, 5, 6, 7};
                for (int64_t k0 = 0; k0 < K; k0 += 8) {
                    const int64_t nk = min64(8, K - k0);
                    float pv[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    for (int64_t q = 0; q < nk; q++) pv[q] = p[k0 + q];
                    const v8f pp = ld(pv);
                    if (!lane_any(pp > splat(0.0f))) continue;  /* P <= 0 never fires: no draws */
                    const v8u kk = (lane + (uint32_t)k0) * 0x27D4EB2Fu;
                    uint64_t m[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    for (int64_t t = 0; t < T; t++) {
                        const uint32_t kt = mix32(kb ^ ((uint32_t)t * 0x85EBCA6Bu + 0xC2B2AE35u));
                        const v8u h = mix32v(kk + kt) >> 8;
                        const v8f u = __builtin_convertvector((v8i)h, v8f) * scale;  /* exact: h < 2^24 */
                        const v8i fire = u < pp;
                        for (int q = 0; q < 8; q++) m[q] |= fire[q] ? (uint64_t)1 << t : 0;
                    }
                    for (int64_t q = 0; q < nk; q++) mb[k0 + q] = m[q];
                }
            }
            int64_t c = 0;
            for (int64_t k = 0; k < K; k++) {
                c += mb[k] != 0;
                spikes += __builtin_popcountll(mb[k]);
            }
            row_ptr[b + 1] = c;
        }
    }
    *nspikes = spikes;
    row_ptr[0] = 0;
    for (int64_t b = 0; b < B; b++) row_ptr[b + 1] += row_ptr[b];
    return row_ptr[B];
}

/* ---- 2-D convolution of one-channel analog images (a first layer on pixels) -------------
   oneDNN handles a single input channel poorly; here each output pixel is the bias plus
   x * Wt[dy][dx][:] over the kernel taps inside the image (Co-float vectors, Co % 8 == 0),
   in tap order, channels-last. The pixel's taps are gathered once, then each block of up
   to 32 outputs is summed in registers and written once. Stride 1; geom as for the spike
   convolution (Ci = 1). */
#define C1_TAPS_MAX 64  /* kh * kw the kernels take (the caller checks) */

/* The taps of output pixel (i, j) inside the image: input values and weight offsets. */
static inline int conv1_taps(const float *xn, int64_t i, int64_t j, conv_geom g, float *xv, int64_t *wo) {
    int nt = 0;
    for (int64_t dy = 0; dy < g.kh; dy++) {
        const int64_t h = i + dy - g.ph;
        if (h < 0 || h >= g.H) continue;
        for (int64_t dx = 0; dx < g.kw; dx++) {
            const int64_t w = j + dx - g.pw;
            if (w < 0 || w >= g.W) continue;
            xv[nt] = xn[h * g.W + w];
            wo[nt++] = (dy * g.kw + dx) * g.Co;
        }
    }
    return nt;
}

#define CONV1_BLOCK(NV) do {                                                           \
        v8f a_[NV];                                                                    \
        for (int q = 0; q < NV; q++) a_[q] = bias ? ld(bias + cb + 8 * q) : splat(0.0f); \
        for (int t = 0; t < ntap; t++) {                                               \
            const v8f x_ = splat(xv[t]);                                               \
            const float *w_ = Wt + wo[t] + cb;                                         \
            for (int q = 0; q < NV; q++) a_[q] += x_ * ld(w_ + 8 * q);                 \
        }                                                                              \
        for (int q = 0; q < NV; q++) st(o + cb + 8 * q, a_[q]);                        \
    } while (0)

void snn_conv1_fwd(const float *X, const float *Wt, const float *bias, float *out, int64_t N,
                   const int64_t *geom, int nt) {
    const conv_geom g = geom_of(geom);
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xn = X + n * g.H * g.W;
        float xv[C1_TAPS_MAX];
        int64_t wo[C1_TAPS_MAX];
        for (int64_t i = 0; i < g.Ho; i++)
            for (int64_t j = 0; j < g.Wo; j++) {
                float *o = out + ((n * g.Ho + i) * g.Wo + j) * g.Co;
                const int ntap = conv1_taps(xn, i, j, g, xv, wo);
                int64_t cb = 0;
                for (; cb + 32 <= g.Co; cb += 32) CONV1_BLOCK(4);
                for (; cb < g.Co; cb += 8) CONV1_BLOCK(1);
            }
    }
}

/* dWt[kh][kw][Co] = sum over images and output pixels of x(tapped) * G; per-thread copies
   (dWt_threads[nt][kh*kw*Co], zeroed by the caller) summed into dWt. */
void snn_conv1_wgrad(const float *X, const float *G, float *dWt, float *dWt_threads, int64_t N,
                     const int64_t *geom, int nt) {
    const conv_geom g = geom_of(geom);
    const int64_t wsize = g.kh * g.kw * g.Co;
    #pragma omp parallel num_threads(nt)
    {
        float *d = dWt_threads + omp_get_thread_num() * wsize;
        SHARE(N, n0, n1)
        for (int64_t n = n0; n < n1; n++) {
            const float *xn = X + n * g.H * g.W;
            for (int64_t i = 0; i < g.Ho; i++)
                for (int64_t j = 0; j < g.Wo; j++) {
                    const float *gp = G + ((n * g.Ho + i) * g.Wo + j) * g.Co;
                    for (int64_t dy = 0; dy < g.kh; dy++) {
                        const int64_t h = i + dy - g.ph;
                        if (h < 0 || h >= g.H) continue;
                        for (int64_t dx = 0; dx < g.kw; dx++) {
                            const int64_t w = j + dx - g.pw;
                            if (w < 0 || w >= g.W) continue;
                            const float xv = xn[h * g.W + w];
                            if (xv == 0.0f) continue;
                            float *dt = d + (dy * g.kw + dx) * g.Co;
                            for (int64_t cb = 0; cb < g.Co; cb += 8) st(dt + cb, ld(dt + cb) + splat(xv) * ld(gp + cb));
                        }
                    }
                }
        }
    }
    sum_thread_copies(dWt, dWt_threads, wsize, nt);
}

/* ---- a thin matmul: out[M, N] = G[M, K] @ W[K, N] for a small K ---------------------
   The input gradient of a layer with few outputs (a 10-class readout: K = 10). BLAS
   runs this shape far below its GEMM rate (on one AVX2 machine, [4000, 10] @ [10, 512]
   took about a quarter of the time of [4000, 512] @ [512, 512], 1/51 of its work); here
   each output row is accumulated in registers, 64 columns at a time, and written once.
   Sums over k in order, multiply then add (no fused multiply-add). */
#define THIN_BLOCK(NV) do {                                                          \
        v8f a_[NV];                                                                  \
        for (int q = 0; q < NV; q++) a_[q] = splat(0.0f);                            \
        for (int64_t k = 0; k < K; k++) {                                            \
            const v8f gk = splat(gr[k]);                                             \
            const float *w_ = W + k * N + n0;                                        \
            for (int q = 0; q < NV; q++) a_[q] = a_[q] + gk * ld(w_ + 8 * q);        \
        }                                                                            \
        for (int q = 0; q < NV; q++) st(o + n0 + 8 * q, a_[q]);                      \
    } while (0)

void snn_thin_mm(const float *G, const float *W, float *out, int64_t M, int64_t K, int64_t N, int nt) {
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < M; r++) {
        const float *gr = G + r * K;
        float *o = out + r * N;
        int64_t n0 = 0;
        for (; n0 + 64 <= N; n0 += 64) THIN_BLOCK(8);
        for (; n0 + 8 <= N; n0 += 8) THIN_BLOCK(1);
        for (; n0 < N; n0++) {
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++) s = s + gr[k] * W[k * N + n0];
            o[n0] = s;
        }
    }
}

/* ---- torch.rand's numbers, made faster ----------------------------------------------
   PyTorch's CPU generator is MT19937 (at::mt19937), and torch.rand(float32) turns each
   32-bit output y into (y & (2^24 - 1)) * 2^-24, one element after the other under the
   generator's lock (about 8 ns per number here). snn_mt_uniform continues the same
   stream from the generator's exported state (s[624], left, next, as get_state() holds
   them) and writes the same floats, with the block regeneration and the tempering in
   vector loops; the caller writes the advanced state back with set_state(). A draw
   decrements left first and regenerates the block when it reaches 0 (so left - 1
   numbers remain in the block from s[next]).
   Returns 0, or -1 for a state torch would not produce (then nothing is written). */
#define MT_N 624
#define MT_M 397

static inline uint32_t mt_twist(uint32_t u, uint32_t v) {
    return (((u & 0x80000000u) | (v & 0x7FFFFFFFu)) >> 1) ^ ((0u - (v & 1u)) & 0x9908B0DFu);
}

static inline uint32_t mt_temper(uint32_t y) {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9D2C5680u;
    y ^= (y << 15) & 0xEFC60000u;
    return y ^ (y >> 18);
}

/* a stream position torch can hold: left - 1 numbers remain in the block from s[next] */
static inline int mt_state_ok(int64_t l, int64_t x) {
    return l >= 1 && l <= MT_N && x >= 0 && x <= MT_N && x + l - 1 <= MT_N;
}

static void mt_regenerate(uint32_t *restrict s) {
    int i;
    for (i = 0; i < MT_N - MT_M; i++) s[i] = s[i + MT_M] ^ mt_twist(s[i], s[i + 1]);
    for (; i < MT_N - 1; i++) s[i] = s[i + MT_M - MT_N] ^ mt_twist(s[i], s[i + 1]);
    s[MT_N - 1] = s[MT_M - 1] ^ mt_twist(s[MT_N - 1], s[0]);
}

int snn_mt_uniform(uint32_t *restrict s, int64_t *left, int64_t *next, float *restrict out, int64_t n) {
    int64_t l = *left, x = *next;
    if (!mt_state_ok(l, x)) return -1;
    const float scale = 1.0f / 16777216.0f;
    for (int64_t done = 0; done < n;) {
        if (l == 1) {
            mt_regenerate(s);
            l = MT_N + 1;
            x = 0;
        }
        int64_t take = l - 1;
        if (take > n - done) take = n - done;
        const uint32_t *src = s + x;
        float *dst = out + done;
        for (int64_t j = 0; j < take; j++) {
            dst[j] = (float)(int32_t)(mt_temper(src[j]) & 0xFFFFFFu) * scale;
        }
        x += take;
        l -= take;
        done += take;
    }
    *left = l;
    *next = x;
    return 0;
}

/* n raw (tempered) 32-bit outputs of the stream, as at::mt19937's operator() gives them */
static void mt_fill_u32(uint32_t *restrict s, int64_t *l, int64_t *x, uint32_t *restrict out, int64_t n) {
    for (int64_t done = 0; done < n;) {
        if (*l == 1) {
            mt_regenerate(s);
            *l = MT_N + 1;
            *x = 0;
        }
        int64_t take = *l - 1;
        if (take > n - done) take = n - done;
        const uint32_t *src = s + *x;
        uint32_t *dst = out + done;
        for (int64_t j = 0; j < take; j++) {
            dst[j] = mt_temper(src[j]);
        }
        *x += take;
        *l -= take;
        done += take;
    }
}

/* Tensor.bernoulli_(p) on float32 as PyTorch's default CPU kernel draws it: per element
   one double u = ((y1 << 32 | y2) & (2^53 - 1)) * 2^-53 from two consecutive outputs,
   out = u < p. Same state convention and return value as snn_mt_uniform. */
int snn_mt_bernoulli(uint32_t *restrict s, int64_t *left, int64_t *next, float *restrict out, int64_t n,
                     double p) {
    int64_t l = *left, x = *next;
    if (!mt_state_ok(l, x)) return -1;
    /* u < p  <=>  v < p * 2^53 (exact: a power-of-two scaling)  <=>  v < ceil(p * 2^53) */
    const double scaled = p <= 0.0 ? 0.0 : p >= 1.0 ? 0x1p53 : ceil(p * 0x1p53);
    const uint64_t thresh = (uint64_t)scaled;
    enum { CHUNK = 2048 };
    uint32_t y[2 * CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        const int64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        mt_fill_u32(s, &l, &x, y, 2 * m);
        float *o = out + i0;
        /* v = (y1 & (2^21 - 1)) << 32 | y2 compared with thresh in 32-bit halves (vectorises) */
        const uint32_t th = (uint32_t)(thresh >> 32), tl = (uint32_t)thresh;
        for (int64_t j = 0; j < m; j++) {
            const uint32_t h = y[2 * j] & 0x1FFFFFu, lo = y[2 * j + 1];
            o[j] = (h < th) | ((h == th) & (lo < tl)) ? 1.0f : 0.0f;
        }
    }
    *left = l;
    *next = x;
    return 0;
}
