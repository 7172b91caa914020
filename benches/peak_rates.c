/* Peak issue rate of the two multiply-add instructions the semantic tier chooses between, on one
 * core: AVX-512 f32 FMA (16 multiply-adds) and AVX-512 VNNI vpdpbusd (64 u8 x s8 multiply-adds),
 * each in 12 independent chains so latency does not limit it. BENCHMARKS.md ("Semantic dedup")
 * quotes it to say how far the int8 kernel is from this CPU's limit.
 *
 *   gcc -O3 -mavx512f -mavx512bw -mavx512vnni benches/peak_rates.c -o /tmp/peak_rates
 *   /tmp/peak_rates
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    const long n = 200000000;
    __m512 f[12];
    for (int i = 0; i < 12; i++) f[i] = _mm512_set1_ps(i * 0.001f);
    __m512 x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.999999f);
    double t = now();
    for (long k = 0; k < n; k++) {
        for (int i = 0; i < 12; i++) f[i] = _mm512_fmadd_ps(x, f[i], y);
        __asm__ volatile("" ::"v"(f[0]));
    }
    double tf = now() - t;
    float fs = 0;
    for (int i = 0; i < 12; i++) fs += _mm512_reduce_add_ps(f[i]);

    __m512i a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_epi32(i);
    __m512i u = _mm512_set1_epi8(3), v = _mm512_set1_epi8(-2);
    t = now();
    for (long k = 0; k < n; k++) {
        for (int i = 0; i < 12; i++) a[i] = _mm512_dpbusd_epi32(a[i], u, v);
        __asm__ volatile("" ::"v"(a[0]));
    }
    double ti = now() - t;
    long is = 0;
    for (int i = 0; i < 12; i++) is += _mm512_reduce_add_epi32(a[i]);

    printf("f32 FMA:  %.2f G instr/s = %.1f G multiply-adds/s\n", n * 12 / tf / 1e9,
           n * 12 * 16 / tf / 1e9);
    printf("vpdpbusd: %.2f G instr/s = %.1f G multiply-adds/s\n", n * 12 / ti / 1e9,
           n * 12 * 64 / ti / 1e9);
    printf("(checksums %g %ld)\n", fs, is);
    return 0;
}
