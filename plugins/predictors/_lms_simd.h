/* Tap loops of the LMS stages: a portable C version and, on x86-64 with GCC or Clang, an AVX2
 * version chosen once at import when the CPU has AVX2 (qres_lms_init). Integer arithmetic gives
 * the same results whichever version runs, so output bytes do not depend on the machine.
 * Right shifts of negative values are arithmetic (GCC and Clang document it).
 *
 * Callers keep |w| <= 2**23, |h| < 2**30 and n <= 512, so every dot product fits int64; the
 * normalised step's g * d[i] fits int32 (|g| <= 2**12, |d| <= 2**17). */
#ifndef QRES_LMS_SIMD_H
#define QRES_LMS_SIMD_H
#include <stdint.h>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define QRES_LMS_AVX2 1
#include <immintrin.h>
#else
#define QRES_LMS_AVX2 0
#endif

static int qres_lms_use_avx2 = 0;

/* ---- portable versions ---- */

static inline int32_t qres_clamp32(int32_t v, int32_t lim)
{
    return v > lim ? lim : (v < -lim ? -lim : v);
}

/* sum of w[i] * h[i] in int64 */
static inline int64_t qres_dot_c(const int32_t *w, const int32_t *h, int n)
{
    int64_t acc = 0;
    for (int i = 0; i < n; i++)
        acc += (int64_t)w[i] * h[i];
    return acc;
}

/* normalised step w[i] += round(g * d[i] / 256), clamped to [-lim, lim], fused with the next
 * prediction: returns the sum of the new w[i] * h[i] (one pass over the weights, not two) */
static inline int64_t qres_nlms_step_dot_c(int32_t *w, const int32_t *d, const int32_t *h, int n,
                                           int32_t g, int32_t lim)
{
    int64_t acc = 0;
    for (int i = 0; i < n; i++) {
        int32_t v = qres_clamp32(w[i] + ((g * d[i] + 128) >> 8), lim);
        w[i] = v;
        acc += (int64_t)v * h[i];
    }
    return acc;
}

/* sign-error step w[i] += sgn * d[i] (sgn is +1 or -1), clamped, fused the same way */
static inline int64_t qres_sign_step_dot_c(int32_t *w, const int32_t *d, const int32_t *h, int n,
                                           int32_t sgn, int32_t lim)
{
    int64_t acc = 0;
    for (int i = 0; i < n; i++) {
        int32_t v = qres_clamp32(w[i] + sgn * d[i], lim);
        w[i] = v;
        acc += (int64_t)v * h[i];
    }
    return acc;
}

/* ---- AVX2 versions: 8 taps a step, the 64-bit products of the even and odd lanes summed
 * separately (integer sums do not depend on their order), the n % 8 tail as above ---- */
#if QRES_LMS_AVX2
#define QRES_AVX2 __attribute__((target("avx2")))

QRES_AVX2 static inline __m256i qres_mul_acc(__m256i acc, __m256i a, __m256i b)
{
    acc = _mm256_add_epi64(acc, _mm256_mul_epi32(a, b));
    return _mm256_add_epi64(acc, _mm256_mul_epi32(_mm256_srli_epi64(a, 32),
                                                  _mm256_srli_epi64(b, 32)));
}

QRES_AVX2 static inline int64_t qres_hsum64(__m256i acc)
{
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

/* h[i .. i + 8), where h[n - 1] is `last`, not yet in memory: a vector load right after a
 * scalar store to the same bytes stalls the pipeline, so the last lane is blended in. */
QRES_AVX2 static inline __m256i qres_load_h(const int32_t *h, int i, int n, int32_t last)
{
    __m256i v = _mm256_loadu_si256((const __m256i *)(h + i));
    if (i + 8 == n)
        v = _mm256_blend_epi32(v, _mm256_set1_epi32(last), 0x80);
    return v;
}

QRES_AVX2 static int64_t qres_dot_avx2(const int32_t *w, int32_t *h, int n, int32_t last)
{
    __m256i acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = qres_mul_acc(acc, _mm256_loadu_si256((const __m256i *)(w + i)),
                           qres_load_h(h, i, n, last));
    h[n - 1] = last;
    return qres_hsum64(acc) + qres_dot_c(w + i, h + i, n - i);
}

QRES_AVX2 static int64_t qres_nlms_step_dot_avx2(int32_t *w, const int32_t *d, int32_t *h,
                                                 int n, int32_t g, int32_t lim, int32_t last)
{
    const __m256i vg = _mm256_set1_epi32(g), half = _mm256_set1_epi32(128);
    const __m256i hi = _mm256_set1_epi32(lim), lo = _mm256_set1_epi32(-lim);
    __m256i acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i step = _mm256_mullo_epi32(vg, _mm256_loadu_si256((const __m256i *)(d + i)));
        __m256i v = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(w + i)),
                                     _mm256_srai_epi32(_mm256_add_epi32(step, half), 8));
        v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
        _mm256_storeu_si256((__m256i *)(w + i), v);
        acc = qres_mul_acc(acc, v, qres_load_h(h, i, n, last));
    }
    h[n - 1] = last;
    return qres_hsum64(acc) + qres_nlms_step_dot_c(w + i, d + i, h + i, n - i, g, lim);
}

QRES_AVX2 static int64_t qres_sign_step_dot_avx2(int32_t *w, const int32_t *d, int32_t *h,
                                                 int n, int32_t sgn, int32_t lim, int32_t last)
{
    const __m256i hi = _mm256_set1_epi32(lim), lo = _mm256_set1_epi32(-lim);
    __m256i acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i dv = _mm256_loadu_si256((const __m256i *)(d + i));
        __m256i wv = _mm256_loadu_si256((const __m256i *)(w + i));
        __m256i v = sgn > 0 ? _mm256_add_epi32(wv, dv) : _mm256_sub_epi32(wv, dv);
        v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
        _mm256_storeu_si256((__m256i *)(w + i), v);
        acc = qres_mul_acc(acc, v, qres_load_h(h, i, n, last));
    }
    h[n - 1] = last;
    return qres_hsum64(acc) + qres_sign_step_dot_c(w + i, d + i, h + i, n - i, sgn, lim);
}
#endif

/* ---- what the kernels call ---- */

/* Picks the AVX2 versions when the CPU has AVX2; called once when the module is imported. */
static void qres_lms_init(void)
{
#if QRES_LMS_AVX2
    __builtin_cpu_init();
    qres_lms_use_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
}

/* The three below first store `last` as the newest history value h[n - 1], then work on
 * h[0 .. n). */

static inline int64_t qres_dot(const int32_t *w, int32_t *h, int n, int32_t last)
{
#if QRES_LMS_AVX2
    if (qres_lms_use_avx2)
        return qres_dot_avx2(w, h, n, last);
#endif
    h[n - 1] = last;
    return qres_dot_c(w, h, n);
}

static inline int64_t qres_nlms_step_dot(int32_t *w, const int32_t *d, int32_t *h, int n,
                                         int32_t g, int32_t lim, int32_t last)
{
#if QRES_LMS_AVX2
    if (qres_lms_use_avx2)
        return qres_nlms_step_dot_avx2(w, d, h, n, g, lim, last);
#endif
    h[n - 1] = last;
    return qres_nlms_step_dot_c(w, d, h, n, g, lim);
}

static inline int64_t qres_sign_step_dot(int32_t *w, const int32_t *d, int32_t *h, int n,
                                         int32_t sgn, int32_t lim, int32_t last)
{
#if QRES_LMS_AVX2
    if (qres_lms_use_avx2)
        return qres_sign_step_dot_avx2(w, d, h, n, sgn, lim, last);
#endif
    h[n - 1] = last;
    return qres_sign_step_dot_c(w, d, h, n, sgn, lim);
}
#endif
