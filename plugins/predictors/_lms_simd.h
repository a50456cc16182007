/* The LMS stages of the NLMS cascade: one sample's updates of every stage of a channel, in a
 * portable C version and, on x86-64 with GCC or Clang, an AVX2 version chosen once at import
 * when the CPU has AVX2 (qres_lms_init). Integer arithmetic gives the same results whichever
 * version runs, so output bytes do not depend on the machine. Right shifts of negative values
 * are arithmetic (GCC and Clang document it). docs/predictors.md specifies the arithmetic.
 *
 * The whole per-sample update of all stages is compiled once per version (QRES_DEFINE_STAGES),
 * so the tap loops inline into it and the common stage lengths (8, 16, 32 taps) get loops of a
 * constant length: a call per stage cost more than its taps on this short cascade.
 *
 * Callers keep |w| <= 2**23, |h| < 2**30 and n <= 512, so every dot product fits int64; the
 * normalised step's g * d[i] fits int32 (|g| <= 2**12, |d| <= 2**17). */
#ifndef QRES_LMS_SIMD_H
#define QRES_LMS_SIMD_H
#include <stdint.h>
#include <string.h>

/* Inlined into each version's loop (the tap loops then get their constant lengths there). */
#if defined(__GNUC__) || defined(__clang__)
#define QRES_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define QRES_INLINE static __forceinline
#else
#define QRES_INLINE static inline
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define QRES_LMS_AVX2 1
#include <immintrin.h>
#else
#define QRES_LMS_AVX2 0
#endif

static int qres_lms_use_avx2 = 0;

/* ---- portable versions ---- */

/* Both steps run even when the error gives them no direction (g or sgn 0), so no branch on
 * the data chooses the loop. Such a step leaves every weight as it was but clamps it to
 * [-lim, lim], which changes nothing either: a stage's first nonzero input meets an all-zero
 * window, so its prediction is 0, its error is the input itself and that step clamps all the
 * weights; before it, every window and direction is zero, so no prediction depends on them. */

QRES_INLINE int32_t qres_clamp32(int32_t v, int32_t lim)
{
    return v > lim ? lim : (v < -lim ? -lim : v);
}

/* normalised step w[i] += round(g * d[i] / 256), clamped to [-lim, lim], fused with the next
 * prediction: returns the sum of the new w[i] * h[i] in int64 (one pass over the weights) */
QRES_INLINE int64_t qres_nlms_step_dot_c(int32_t *w, const int32_t *d, const int32_t *h, int n,
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

/* sign-error step w[i] += sgn * d[i] (sgn is -1, 0 or +1), clamped, fused the same way */
QRES_INLINE int64_t qres_sign_step_dot_c(int32_t *w, const int32_t *d, const int32_t *h, int n,
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

/* The same with the newest history value h[n - 1] = last stored first (the AVX2 versions'
 * signature). */
QRES_INLINE int64_t qres_nlms_step_dot_last_c(int32_t *w, const int32_t *d, int32_t *h, int n,
                                              int32_t g, int32_t lim, int32_t last)
{
    h[n - 1] = last;
    return qres_nlms_step_dot_c(w, d, h, n, g, lim);
}

QRES_INLINE int64_t qres_sign_step_dot_last_c(int32_t *w, const int32_t *d, int32_t *h, int n,
                                              int32_t sgn, int32_t lim, int32_t last)
{
    h[n - 1] = last;
    return qres_sign_step_dot_c(w, d, h, n, sgn, lim);
}

/* ---- AVX2 versions: 8 taps a step, the 64-bit products of the even and odd lanes summed
 * separately (integer sums do not depend on their order), the n % 8 tail as above ---- */
#if QRES_LMS_AVX2
#define QRES_AVX2 __attribute__((target("avx2")))
#define QRES_AVX2_INLINE static inline __attribute__((always_inline, target("avx2")))

QRES_AVX2_INLINE __m256i qres_mul_acc(__m256i acc, __m256i a, __m256i b)
{
    acc = _mm256_add_epi64(acc, _mm256_mul_epi32(a, b));
    return _mm256_add_epi64(acc, _mm256_mul_epi32(_mm256_srli_epi64(a, 32),
                                                  _mm256_srli_epi64(b, 32)));
}

QRES_AVX2_INLINE int64_t qres_hsum64(__m256i acc)
{
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

/* h[i .. i + 8), where h[n - 1] is `last`, not yet in memory: a vector load right after a
 * scalar store to the same bytes stalls the pipeline, so the last lane is blended in. */
QRES_AVX2_INLINE __m256i qres_load_h(const int32_t *h, int i, int n, int32_t last)
{
    __m256i v = _mm256_loadu_si256((const __m256i *)(h + i));
    if (i + 8 == n)
        v = _mm256_blend_epi32(v, _mm256_set1_epi32(last), 0x80);
    return v;
}

QRES_AVX2_INLINE int64_t qres_nlms_step_dot_avx2(int32_t *w, const int32_t *d, int32_t *h,
                                                 int n, int32_t g, int32_t lim, int32_t last)
{
    const __m256i vg = _mm256_set1_epi32(g), half = _mm256_set1_epi32(128);
    const __m256i vhi = _mm256_set1_epi32(lim), vlo = _mm256_set1_epi32(-lim);
    __m256i acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i step = _mm256_mullo_epi32(vg, _mm256_loadu_si256((const __m256i *)(d + i)));
        __m256i v = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(w + i)),
                                     _mm256_srai_epi32(_mm256_add_epi32(step, half), 8));
        v = _mm256_min_epi32(_mm256_max_epi32(v, vlo), vhi);
        _mm256_storeu_si256((__m256i *)(w + i), v);
        acc = qres_mul_acc(acc, v, qres_load_h(h, i, n, last));
    }
    h[n - 1] = last;
    return qres_hsum64(acc) + qres_nlms_step_dot_c(w + i, d + i, h + i, n - i, g, lim);
}

QRES_AVX2_INLINE int64_t qres_sign_step_dot_avx2(int32_t *w, const int32_t *d, int32_t *h,
                                                 int n, int32_t sgn, int32_t lim, int32_t last)
{
    const __m256i vsgn = _mm256_set1_epi32(sgn);
    const __m256i vhi = _mm256_set1_epi32(lim), vlo = _mm256_set1_epi32(-lim);
    __m256i acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        /* sign_epi32 gives d, -d or 0 as sgn is +1, -1 or 0: sgn * d without a branch */
        __m256i step = _mm256_sign_epi32(_mm256_loadu_si256((const __m256i *)(d + i)), vsgn);
        __m256i v = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(w + i)), step);
        v = _mm256_min_epi32(_mm256_max_epi32(v, vlo), vhi);
        _mm256_storeu_si256((__m256i *)(w + i), v);
        acc = qres_mul_acc(acc, v, qres_load_h(h, i, n, last));
    }
    h[n - 1] = last;
    return qres_hsum64(acc) + qres_sign_step_dot_c(w + i, d + i, h + i, n - i, sgn, lim);
}
#endif

/* ---- one sample's update of a channel's stages ---- */

/* One adaptive stage (the Stage of _kernels.pyx): weights, and sliding buffers of the clamped
 * past inputs and of their normalised update directions; the window is [pos - n, pos). */
typedef struct {
    int32_t n;       /* taps */
    int32_t shift;   /* step shift: an input at the running level moves a weight 2**-shift */
    int32_t pos;     /* next write index */
    int32_t cap;     /* buffer length */
    int32_t nlms;    /* 1: step scales with the normalised error; 0: with its sign only */
    int32_t *w;      /* n weights, Q16.16 */
    int32_t *hist;   /* cap clamped past inputs */
    int32_t *dirs;   /* cap normalised update directions, Q16.16 */
    int64_t level;   /* running mean of |input|, Q16 */
    int64_t pred;    /* prediction of the next sample from the current window (integer) */
    int64_t count;   /* samples seen in this block */
    /* the step during warm-up (qres_warm), kept from one change of the schedule to the next */
    int64_t warm_end;  /* count at which the next change is due (0 on a fresh stage) */
    int64_t dir_mul;   /* 2**(32 - step shift): scales an input into a direction */
    int64_t dir_lim;   /* 4 * 2**(16 - step shift): clamp of a direction */
} qres_stage;

enum {
    QRES_VLIM = 1073741823, /* 2**30 - 1: clamp of a stage's inputs */
    QRES_WLIM = 8388608,    /* 2**23: clamp of the weights (128.0 in Q16.16) */
    QRES_GLIM = 4096,       /* normalised error clamp in the NLMS update: 16.0 in Q8 */
    QRES_LEVEL_SHIFT = 4,   /* running mean |input| forgets with weight 2**-4 */
};

QRES_INLINE int64_t qres_clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* round-to-nearest (ties toward +inf) arithmetic right shift by k >= 1 */
QRES_INLINE int64_t qres_rsr(int64_t a, int k)
{
    return (a + ((int64_t)1 << (k - 1))) >> k;
}

/* The step shift during warm-up: 8x larger steps for 64 samples, 4x to 256, 2x to 1024. It
 * changes at those four counts only, so the stage keeps what it derives from it and this runs
 * when count reaches warm_end. */
static void qres_warm(qres_stage *s)
{
    int64_t c = s->count;
    int boost = c < 64 ? 3 : c < 256 ? 2 : c < 1024 ? 1 : 0;
    int shift = s->shift - boost >= 1 ? s->shift - boost : 1;
    s->warm_end = c < 64 ? 64 : c < 256 ? 256 : c < 1024 ? 1024 : INT64_MAX;
    s->dir_mul = (int64_t)1 << (32 - shift);
    s->dir_lim = (int64_t)4 << (16 - shift);
}

/* normalised step of one input: v / (level + 1) * 2**(16 - shift), clamped to 4x */
QRES_INLINE int32_t qres_direction(const qres_stage *s, int64_t v)
{
    return (int32_t)qres_clamp64(v * s->dir_mul / (s->level + 65536), -s->dir_lim, s->dir_lim);
}

/* FLAC's fixed predictor of the given order (0..4) from x1 = x[t-1], ..., x4 = x[t-4], in
 * arithmetic modulo 2**64 */
QRES_INLINE int64_t qres_fixed_pred(uint64_t x1, uint64_t x2, uint64_t x3, uint64_t x4, int order)
{
    switch (order) {
    case 0: return 0;
    case 1: return (int64_t)x1;
    case 2: return (int64_t)(2 * x1 - x2);
    case 3: return (int64_t)(3 * x1 - 3 * x2 + x3);
    default: return (int64_t)(4 * x1 - 6 * x2 + 4 * x3 - x4);
    }
}

/* Three functions per version:
 *
 * NAME(s, nst, e): the LMS step of each of the nst stages at s on the window just used for
 * prediction (stage k learns from its input e_k and output e_k - pred_k, and e_{k+1} is that
 * output), each input pushed into its history, and each stage's prediction of the next sample
 * from the new weights and window (one fused pass over the taps); returns the last output.
 * NAME##_one is one stage with n taps, a constant where it is inlined with one.
 *
 * NAME##_lossless(...): one channel of a lossless block through the whole cascade without the
 * TAAF stage (its channels are independent): the fixed stage, the adaptive stages, the bias
 * stage and the residual map, sample after sample, with the stage updates inlined. It is the
 * loop of _kernels.cascade for that case, and gives the same integers. Every stage's output
 * depends on the predictions made at the previous sample only, so the default 32/16/8 cascade
 * takes all three outputs first and then updates its stages one after the other. */
#define QRES_DEFINE_STAGES(NAME, ATTR, INL, NLMS_STEP, SIGN_STEP)                               \
    INL void NAME##_one(qres_stage *s, int64_t e_in, int64_t e_out, const int n)                \
    {                                                                                           \
        int64_t vc, g, acc;                                                                     \
        const int32_t *d;                                                                       \
        int32_t *h;                                                                             \
        if (s->pos == s->cap) {                                                                 \
            /* slide both buffers; the window [pos - n, pos) keeps its values */                \
            memmove(s->hist, s->hist + s->cap - n, n * sizeof(int32_t));                        \
            memmove(s->dirs, s->dirs + s->cap - n, n * sizeof(int32_t));                        \
            s->pos = n;                                                                         \
        }                                                                                       \
        d = s->dirs + s->pos - n;     /* the directions of the window just predicted from */    \
        h = s->hist + s->pos - n + 1; /* the next window, once e_in is pushed */                \
        vc = qres_clamp64(e_in, -QRES_VLIM, QRES_VLIM);                                         \
        /* each kernel stores vc as the newest history value, hist[pos], then predicts */       \
        if (s->nlms) {                                                                          \
            /* normalised error: e / (mean |input| + 1), Q8, clamped to +-16 */                 \
            g = qres_clamp64(qres_clamp64(e_out, -QRES_VLIM, QRES_VLIM) * 16777216 /            \
                                 (s->level + 65536),                                            \
                             -QRES_GLIM, QRES_GLIM);                                            \
            acc = NLMS_STEP(s->w, d, h, n, (int32_t)g, QRES_WLIM, (int32_t)vc);                 \
        } else {                                                                                \
            g = (e_out > 0) - (e_out < 0);                                                      \
            acc = SIGN_STEP(s->w, d, h, n, (int32_t)g, QRES_WLIM, (int32_t)vc);                 \
        }                                                                                       \
        /* written after the step: the step reads dirs[pos - n, pos), not dirs[pos] */          \
        if (s->count == s->warm_end)                                                            \
            qres_warm(s);                                                                       \
        s->dirs[s->pos] = qres_direction(s, vc);                                                \
        s->pos += 1;                                                                            \
        s->count += 1;                                                                          \
        s->level += qres_rsr((vc < 0 ? -vc : vc) * 65536 - s->level, QRES_LEVEL_SHIFT);         \
        s->pred = qres_rsr(acc, 16);                                                            \
    }                                                                                           \
                                                                                                \
    INL int64_t NAME(qres_stage *s, int nst, int64_t e)                                         \
    {                                                                                           \
        for (int k = 0; k < nst; k++) {                                                         \
            int64_t e_out = (int64_t)((uint64_t)e - (uint64_t)s[k].pred);                       \
            switch (s[k].n) {                                                                   \
            case 8: NAME##_one(&s[k], e, e_out, 8); break;                                      \
            case 16: NAME##_one(&s[k], e, e_out, 16); break;                                    \
            case 32: NAME##_one(&s[k], e, e_out, 32); break;                                    \
            default: NAME##_one(&s[k], e, e_out, s[k].n); break;                                \
            }                                                                                   \
            e = e_out;                                                                          \
        }                                                                                       \
        return e;                                                                               \
    }                                                                                           \
                                                                                                \
    ATTR int64_t NAME##_call(qres_stage *s, int nst, int64_t e) { return NAME(s, nst, e); }     \
                                                                                                \
    ATTR void NAME##_lossless(qres_stage *s, int nst, const int64_t *src, int64_t *dst,         \
                              int64_t n, int fixed_order, int bias_shift, int decode,           \
                              int64_t lo, int64_t hi)                                           \
    {                                                                                           \
        uint64_t x1 = 0, x2 = 0, x3 = 0, x4 = 0; /* the samples before t, newest first */       \
        int64_t bias = 0;                        /* Q16 running mean of the bias stage input */ \
        /* the default stages (nlms.py's DEFAULT_STAGES) run unrolled, each with constant taps */ \
        const int dflt = nst == 3 && s[0].n == 32 && s[1].n == 16 && s[2].n == 8;               \
        for (int64_t t = 0; t < n; t++) {                                                       \
            int64_t fp = qres_fixed_pred(x1, x2, x3, x4,                                        \
                                         t >= fixed_order ? fixed_order : (int)t);              \
            uint64_t pred = (uint64_t)fp;                                                       \
            int64_t pc, xr;                                                                     \
            for (int k = 0; k < nst; k++)                                                       \
                pred += (uint64_t)s[k].pred;                                                    \
            if (bias_shift)                                                                     \
                pred += (uint64_t)qres_rsr(bias, 16);                                           \
            pc = qres_clamp64((int64_t)pred, lo, hi);                                           \
            /* the residual map, modulo 2**64: r = x - pc, x = r + pc */                        \
            if (decode) {                                                                       \
                xr = (int64_t)((uint64_t)src[t] + (uint64_t)pc);                                \
                dst[t] = xr;                                                                    \
            } else {                                                                            \
                xr = src[t];                                                                    \
                dst[t] = (int64_t)((uint64_t)xr - (uint64_t)pc);                                \
            }                                                                                   \
            int64_t e = (int64_t)((uint64_t)xr - (uint64_t)fp);                                 \
            if (dflt) {                                                                         \
                int64_t e1 = (int64_t)((uint64_t)e - (uint64_t)s[0].pred);                      \
                int64_t e2 = (int64_t)((uint64_t)e1 - (uint64_t)s[1].pred);                     \
                int64_t e3 = (int64_t)((uint64_t)e2 - (uint64_t)s[2].pred);                     \
                NAME##_one(&s[0], e, e1, 32);                                                   \
                NAME##_one(&s[1], e1, e2, 16);                                                  \
                NAME##_one(&s[2], e2, e3, 8);                                                   \
                e = e3;                                                                         \
            } else {                                                                            \
                e = NAME(s, nst, e);                                                            \
            }                                                                                   \
            if (bias_shift)                                                                     \
                bias += qres_rsr(qres_clamp64(e, -QRES_VLIM, QRES_VLIM) * 65536 - bias,         \
                                 bias_shift);                                                   \
            x4 = x3;                                                                            \
            x3 = x2;                                                                            \
            x2 = x1;                                                                            \
            x1 = (uint64_t)xr;                                                                  \
        }                                                                                       \
    }

QRES_DEFINE_STAGES(qres_stages_c, static, QRES_INLINE, qres_nlms_step_dot_last_c,
                   qres_sign_step_dot_last_c)
#if QRES_LMS_AVX2
QRES_DEFINE_STAGES(qres_stages_avx2, QRES_AVX2 static, QRES_AVX2_INLINE, qres_nlms_step_dot_avx2,
                   qres_sign_step_dot_avx2)
#endif

/* ---- what the kernels call ---- */

/* Picks the AVX2 version when the CPU has AVX2; called once when the module is imported. */
static void qres_lms_init(void)
{
#if QRES_LMS_AVX2
    __builtin_cpu_init();
    qres_lms_use_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
}

/* One sample's updates of the nst stages at s, entered with the first stage's input e; returns
 * the last stage's output (what the stages could not predict). */
static inline int64_t qres_stages_update(qres_stage *s, int nst, int64_t e)
{
#if QRES_LMS_AVX2
    if (qres_lms_use_avx2)
        return qres_stages_avx2_call(s, nst, e);
#endif
    return qres_stages_c_call(s, nst, e);
}

/* A lossless channel through the cascade without the TAAF stage (see QRES_DEFINE_STAGES). */
static inline void qres_cascade_lossless(qres_stage *s, int nst, const int64_t *src, int64_t *dst,
                                         int64_t n, int fixed_order, int bias_shift, int decode,
                                         int64_t lo, int64_t hi)
{
#if QRES_LMS_AVX2
    if (qres_lms_use_avx2) {
        qres_stages_avx2_lossless(s, nst, src, dst, n, fixed_order, bias_shift, decode, lo, hi);
        return;
    }
#endif
    qres_stages_c_lossless(s, nst, src, dst, n, fixed_order, bias_shift, decode, lo, hi);
}
#endif
