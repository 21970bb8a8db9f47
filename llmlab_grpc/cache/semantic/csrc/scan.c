/* llmlab: the semantic index's first pass, over int8 rows (llmlab_grpc/cache/semantic/index.py).
 *
 * Compiled by engine_build.py into the engine build (its own object, no OpenMP, no fast-math)
 * and called through ctypes on the thread that just embedded the question.
 *
 * Why: a lookup's scan of 10k float32 rows (15 MB) took 1.1-1.9 ms on the 2-core machine, bound
 * by memory bandwidth (~13 GB/s here, with the embedding just run through the caches); the same
 * rows as int8 with a scale each are 3.9 MB and scan in a third of the time. Each row's
 * similarity comes out within the index's stated bound of the float32 one, and the index
 * re-scores exactly, in float32, every row that could be in the answer.
 *
 * out[i] = scales[i] * sum_j codes[i][j] * q[j], or -inf where use_sig and sigs[i] != want
 * (a row the guard would refuse: its bytes are never read). */
#include <math.h>
#include <stdint.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

void llmlab_scan_i8(const int8_t *codes, const float *scales, const int64_t *sigs, int64_t want, int use_sig,
                    int64_t n, int dim, const float *q, float *out) {
    for (int64_t i = 0; i < n; i++) {
        if (use_sig && sigs[i] != want) {
            out[i] = -INFINITY;
            continue;
        }
        const int8_t *r = codes + i * (int64_t)dim;
        float sum = 0.f;
        int j = 0;
#if defined(__AVX512F__)
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (; j + 32 <= dim; j += 32) {
            __m512 r0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(r + j))));
            __m512 r1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(r + j + 16))));
            a0 = _mm512_fmadd_ps(r0, _mm512_loadu_ps(q + j), a0);
            a1 = _mm512_fmadd_ps(r1, _mm512_loadu_ps(q + j + 16), a1);
        }
        sum = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__)
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (; j + 16 <= dim; j += 16) {
            __m256 r0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(r + j))));
            __m256 r1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(r + j + 8))));
            a0 = _mm256_fmadd_ps(r0, _mm256_loadu_ps(q + j), a0);
            a1 = _mm256_fmadd_ps(r1, _mm256_loadu_ps(q + j + 8), a1);
        }
        __m256 a = _mm256_add_ps(a0, a1);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        sum = _mm_cvtss_f32(h);
#endif
        for (; j < dim; j++) sum += (float)r[j] * q[j];
        out[i] = scales[i] * sum;
    }
}
