/* C ABI of the runtime's post-processing kernels (in libmdqe_msda.so beside the MSDeformAttn
 * CPU kernel; bound torch-free by runtime/native/postprocess.py). Each one computes what a numpy
 * reference in runtime/clip_filter.py, runtime/tracker.py or runtime/masks.py computes (the
 * tests compare them); they exist because those passes, fused, run 5-20x faster than numpy.
 * All arrays C-contiguous; returns 0, or MDQE_PP_ERR_* (sizes negative or a needed pointer NULL). */
#ifndef MDQE_POSTPROCESS_CPU_H
#define MDQE_POSTPROCESS_CPU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MDQE_PP_ABI_VERSION 2
#define MDQE_PP_ERR_BAD_ARGUMENT 1
#define MDQE_PP_ERR_CAPACITY 2

__attribute__((visibility("default"))) int mdqe_pp_abi_version(void);

/* The per-clip filter's mask terms for K candidate queries idx[k] (in rank order) of masks [Q, T, h, w]
 * (logits), on the first F frames. For candidate k:
 *   nonblank[k]      = any logit > 0;
 *   quality_sum[k]   = sum of sigmoid(x) over the pixels with sigmoid(x) > 0.5, quality_count[k]
 *                      their number (the authors' mask quality);
 *   the NMS sample   = sigmoid of frames 0, frame_step, ... < F, rows and columns 0, 2, ... <
 *                      2*(h/2), 2*(w/2); soft_sum[k] its sum, hard_count[k] its values > 0.5;
 *   overlap[k]       = the authors' soft-IoU NMS overlap among the non-blank candidates: max over
 *                      non-blank i < k of num / (soft_sum[i] + hard_count[k] - num + 1), num = the sum
 *                      of i's sample over k's hard pixels (0 for the first non-blank one and for blank ones);
 *   bits[k, f] (NULL or [K, F, wpf], see below) = the bit set of frame f's logits > 0. */
__attribute__((visibility("default"))) int mdqe_pp_filter_masks(
    const float* masks, int64_t T, int64_t h, int64_t w, const int64_t* idx, int64_t K, int64_t F,
    int64_t frame_step, uint8_t* nonblank, double* quality_sum, int64_t* quality_count, double* soft_sum,
    int64_t* hard_count, float* overlap, uint64_t* bits);

/* Bit sets of binary masks (logit > 0): a map [h, w] becomes h rows of rw = ceil(w / 64) uint64
 * words (pixel x of a row is bit x % 64 of word x / 64); wpf = h * rw words per map.
 * mdqe_pp_positive_bits: bits[k, f] of the maps X[rx[k], fx[f]] (X [*, TX, h, w]; bits [n, F, wpf]). */
__attribute__((visibility("default"))) int mdqe_pp_positive_bits(
    const float* X, int64_t TX, const int64_t* rx, int64_t n, const int64_t* fx, int64_t F, int64_t h, int64_t w,
    uint64_t* bits);

/* inter[i, j] = sum_f |A[ra[i], fa[f]] & B[rb[j], fb[f]]| over bit sets A [*, TA, wpf], B [*, TB, wpf];
 * area_a[i], area_b[j]: their set bits over the F frames. */
__attribute__((visibility("default"))) int mdqe_pp_bit_intersections(
    const uint64_t* A, int64_t TA, const int64_t* ra, int64_t na, const int64_t* fa,
    const uint64_t* B, int64_t TB, const int64_t* rb, int64_t nb, const int64_t* fb,
    int64_t F, int64_t wpf, int64_t* inter, int64_t* area_a, int64_t* area_b);

/* S[rs[k], fs[f]] += X[rx[k], f] for k < n, f < F (S [*, TS, h, w], X [*, TX, h, w]; the rs[k] differ),
 * or S[rs[k], fs[f]] = X[rx[k], f] where fresh[k, f] (NULL or [n, F]: the sum holds no term yet, whatever
 * its memory holds; 0 + x and x differ only in the sign of a zero, which no > 0 test sees); bits (NULL or
 * [*, TS, wpf]) get the bit sets of the updated maps. */
__attribute__((visibility("default"))) int mdqe_pp_accumulate(
    float* S, int64_t TS, const int64_t* rs, const int64_t* fs, const float* X, int64_t TX, const int64_t* rx,
    const uint8_t* fresh, int64_t n, int64_t F, int64_t h, int64_t w, uint64_t* bits);

/* Final masks of n logit maps as COCO run lengths (column-major, starting with 0s) of the [H, W] frame.
 * Map i is L_i = S[rows[i], pos] / divisors[i] (S [*, TS, h, w]; float32 division as numpy's; divisors
 * NULL: no division; a stack [n, h, w] is TS = 1, rows 0 .. n-1, pos 0). bits (NULL or [n, wpf], see
 * above) = the bit sets of S[rows[i], pos] > 0, which bound the work (else the kernel computes them).
 * Pixel (y, x) of the frame is
 * (a0[y]*H(r0[y], x) + a1[y]*H(r1[y], x)) > 0 with H(r, x) = b0[x]*L_i[r, c0[x]] + b1[x]*L_i[r, c1[x]]
 * (separable resampling taps, float32, no FMA). Runs of mask i go to counts[offsets[i] .. offsets[i + 1]);
 * an empty mask has none. counts has capacity cap; MDQE_PP_ERR_CAPACITY when it is too small. */
__attribute__((visibility("default"))) int mdqe_pp_mask_runs(
    const float* S, int64_t TS, const int64_t* rows, int64_t pos, const int32_t* divisors, const uint64_t* bits,
    int64_t n, int64_t h, int64_t w, const int64_t* r0, const int64_t* r1, const float* a0, const float* a1, int64_t H,
    const int64_t* c0, const int64_t* c1, const float* b0, const float* b1, int64_t W, uint32_t* counts,
    int64_t cap, int64_t* offsets);

#ifdef __cplusplus
}
#endif

#endif
