/* The CPU dispatcher: picks the kernel family a process runs. base/cpu.c
 * reads CPUID once and applies the HERD_CPU cap (ref, avx2, avx512); each
 * family's table constructor (herd_kernels_avx512(), herd_kernels_avx2())
 * returns NULL when those features do not allow it; here the widest allowed
 * family wins, and the scalar reference is the floor every x86-64 has.
 * Kept apart from kernels_ref.c so that file holds only the reference
 * kernels, the definition every SIMD variant is tested against. */
#include "kernels/kernels.h"

const struct herd_kernels *herd_kernels_best(void) {
    const struct herd_kernels *k = herd_kernels_avx512();
    if (!k) k = herd_kernels_avx2();
    return k ? k : herd_kernels_ref();
}
