/* Tap loops of the LMS stages, compiled twice (AVX2 and baseline) where GCC supports
 * target_clones on x86-64 Linux; the loader picks the clone the CPU can run. Integer
 * arithmetic gives the same results whichever clone runs, so output bytes do not depend on
 * the machine. Right shifts of negative values are arithmetic (GCC and Clang document it). */
#ifndef QRES_LMS_SIMD_H
#define QRES_LMS_SIMD_H
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define QRES_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QRES_CLONES
#endif

/* sum of w[i] * h[i] in int64 (callers keep |w| <= 2**23, |h| < 2**30, n <= 512) */
QRES_CLONES static int64_t qres_dot(const int32_t *w, const int32_t *h, int n)
{
    int64_t acc = 0;
    for (int i = 0; i < n; i++)
        acc += (int64_t)w[i] * h[i];
    return acc;
}

/* sign-error step: w[i] += sgn * d[i] (sgn is +1 or -1), clamped to [-lim, lim] */
QRES_CLONES static void qres_sign_step(int32_t *w, const int32_t *d, int n, int32_t sgn,
                                       int32_t lim)
{
    for (int i = 0; i < n; i++) {
        int32_t v = w[i] + sgn * d[i];
        w[i] = v > lim ? lim : (v < -lim ? -lim : v);
    }
}

/* normalised step: w[i] += round(g * d[i] / 256) (|g| <= 2**12, |d| <= 2**17: fits int32) */
QRES_CLONES static void qres_nlms_step(int32_t *w, const int32_t *d, int n, int32_t g,
                                       int32_t lim)
{
    for (int i = 0; i < n; i++) {
        int32_t v = w[i] + ((g * d[i] + 128) >> 8);
        w[i] = v > lim ? lim : (v < -lim ? -lim : v);
    }
}
#endif
