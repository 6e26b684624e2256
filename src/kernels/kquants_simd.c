/* Which multi-token kernel is the twin of a table's single-token K-quant
 * dot product: looked up by the function itself, so that matmul takes the
 * multi-token path exactly where the family's table chose that kernel (and
 * its results are the same bits). Plain C, no instruction-set flags: it only
 * compares addresses. */
#include "kernels/kquants_simd.h"

herd_dot_q8k_rows_fn herd_dot_q8k_rows_of(float (*dot)(const void *, const struct herd_block_q8_k *, size_t)) {
    static const struct {
        float (*dot)(const void *, const struct herd_block_q8_k *, size_t);
        herd_dot_q8k_rows_fn rows;
    } twins[] = {
        {herd_dot_q2_k_q8k_avx2, herd_dot_q2_k_q8k_rows_avx2},
        {herd_dot_q3_k_q8k_avx2, herd_dot_q3_k_q8k_rows_avx2},
        {herd_dot_q4_k_q8k_avx2, herd_dot_q4_k_q8k_rows_avx2},
        {herd_dot_q5_k_q8k_avx2, herd_dot_q5_k_q8k_rows_avx2},
        {herd_dot_q6_k_q8k_avx2, herd_dot_q6_k_q8k_rows_avx2},
        {herd_dot_q2_k_q8k_avx512, herd_dot_q2_k_q8k_rows_avx512},
        {herd_dot_q3_k_q8k_avx512, herd_dot_q3_k_q8k_rows_avx512},
        {herd_dot_q4_k_q8k_avx512, herd_dot_q4_k_q8k_rows_avx512},
        {herd_dot_q5_k_q8k_avx512, herd_dot_q5_k_q8k_rows_avx512},
        {herd_dot_q6_k_q8k_avx512, herd_dot_q6_k_q8k_rows_avx512},
        {herd_dot_q2_k_q8k_vnni, herd_dot_q2_k_q8k_rows_vnni},
        {herd_dot_q3_k_q8k_vnni, herd_dot_q3_k_q8k_rows_vnni},
        {herd_dot_q4_k_q8k_vnni, herd_dot_q4_k_q8k_rows_vnni},
        {herd_dot_q5_k_q8k_vnni, herd_dot_q5_k_q8k_rows_vnni},
        {herd_dot_q6_k_q8k_vnni, herd_dot_q6_k_q8k_rows_vnni},
    };
    for (size_t i = 0; i < sizeof twins / sizeof twins[0]; i++)
        if (twins[i].dot == dot) return twins[i].rows;
    return NULL;
}
