/* C ABI of the MSDeformAttn CPU kernel (libmdqe_msda.so). fp32, C-contiguous arrays:
 *   value              [N, S, M, D]
 *   spatial_shapes     [L, 2]  (H_l, W_l), int64
 *   level_start_index  [L]     int64, level_start_index[l] = sum_{k<l} H_k * W_k
 *   sampling_locations [N, Lq, M, L, P, 2] normalised (x, y)
 *   attention_weights  [N, Lq, M, L, P]
 *   output             [N, Lq, M * D]  (written, never read)
 * Returns MDQE_MSDA_OK or an error code; mdqe_msda_last_error() then describes the problem
 * (per thread). num_threads <= 0 means: the number of CPUs this process may run on. */
#ifndef MDQE_MSDA_CPU_H
#define MDQE_MSDA_CPU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MDQE_MSDA_ABI_VERSION 1

enum mdqe_msda_status {
    MDQE_MSDA_OK = 0,
    MDQE_MSDA_ERR_NULL_POINTER = 1,   /* a required pointer is NULL */
    MDQE_MSDA_ERR_BAD_DIMENSION = 2,  /* a size is negative, or M, D, L, P < 1, or too large */
    MDQE_MSDA_ERR_BAD_SHAPES = 3,     /* a spatial shape entry is < 1 */
    MDQE_MSDA_ERR_BAD_LEVEL_START = 4,/* level_start_index disagrees with spatial_shapes */
    MDQE_MSDA_ERR_S_MISMATCH = 5      /* sum of H_l * W_l differs from S */
};

__attribute__((visibility("default"))) int mdqe_msda_abi_version(void);

__attribute__((visibility("default"))) int mdqe_msda_cpu_forward(
    const float* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
    const float* sampling_locations, const float* attention_weights,
    int64_t N, int64_t S, int64_t M, int64_t D, int64_t L, int64_t Lq, int64_t P,
    float* output, int32_t num_threads);

/* Description of the last error reported to the calling thread ("" if none). */
__attribute__((visibility("default"))) const char* mdqe_msda_last_error(void);

/* Name of a status code, e.g. "MDQE_MSDA_ERR_S_MISMATCH". */
__attribute__((visibility("default"))) const char* mdqe_msda_status_name(int status);

/* Number of threads num_threads <= 0 resolves to. */
__attribute__((visibility("default"))) int32_t mdqe_msda_default_threads(void);

#ifdef __cplusplus
}
#endif

#endif /* MDQE_MSDA_CPU_H */
