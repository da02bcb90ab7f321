// MSDeformAttn CUDA kernel: one thread per (n, q, m, channel group). fp32 uses one channel per
// thread; fp16 uses half2 loads (two channels per thread) when D is even and the buffers are
// 4-byte aligned, else scalar half loads. Accumulation is always fp32 (msda_core.h).
#include <cuda_fp16.h>

#include "mdqe_msda/msda_core.h"
#include "mdqe_msda/msda_cuda.h"

namespace mdqe {
namespace {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

__device__ __forceinline__ void store(float* out, const float* acc) { out[0] = acc[0]; }
__device__ __forceinline__ void store(__half* out, const float* acc) { out[0] = __float2half_rn(acc[0]); }
__device__ __forceinline__ void store(__half2* out, const float* acc) { out[0] = __floats2half2_rn(acc[0], acc[1]); }

// T: scalar type of locations/weights; E: stored element of value/output (T or half2); LANES: channels per E.
template <typename T, typename E, int LANES>
__global__ void msda_forward_kernel(const E* __restrict__ value, const int32_t* __restrict__ spatial_shapes,
                                    const int32_t* __restrict__ level_start_index, const T* __restrict__ loc,
                                    const T* __restrict__ attn, int64_t N, int64_t S, int64_t M, int64_t groups,
                                    int64_t L, int64_t Lq, int64_t P, E* __restrict__ output) {
    const int64_t total = N * Lq * M * groups;
    const int64_t pixel_stride = M * groups;  // elements E between two pixels
    for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t g = idx % groups;
        int64_t rest = idx / groups;
        const int64_t m = rest % M;
        rest /= M;  // rest = n * Lq + q
        const int64_t n = rest / Lq;
        const T* loc_p = loc + (rest * M + m) * L * P * 2;
        const T* attn_p = attn + (rest * M + m) * L * P;
        const E* value_nm = value + n * S * pixel_stride + m * groups + g;
        float acc[LANES];
        for (int k = 0; k < LANES; ++k) acc[k] = 0.0f;
        MsdaCorners c;
        // level_start_index must be the running sum of H*W (the rule the CPU kernel and the torch form
        // enforce with an error). The values live in device memory, so a mismatch cannot be raised
        // without a device sync: it makes the output NaN instead (loud, never a silently wrong number;
        // the runtime's non-finite check then stops with exit 3).
        bool shapes_ok = true;
        int64_t expected_start = 0;
        for (int64_t l = 0; l < L; ++l) {
            const int32_t H = spatial_shapes[2 * l], W = spatial_shapes[2 * l + 1];
            const int64_t start = level_start_index[l];
            const bool level_ok = H > 0 && W > 0 && start == expected_start && start + static_cast<int64_t>(H) * W <= S;
            shapes_ok = shapes_ok && level_ok;
            expected_start += static_cast<int64_t>(H) * W;
            for (int64_t s = 0; s < P; ++s, loc_p += 2, ++attn_p) {
                if (!level_ok) continue;
                if (msda_bilinear_setup(to_float(loc_p[0]), to_float(loc_p[1]), H, W, c)) {
                    msda_accumulate(value_nm + start * pixel_stride, pixel_stride, c, to_float(*attn_p), acc, 1, LANES);
                }
            }
        }
        if (!shapes_ok) {
            for (int k = 0; k < LANES; ++k) acc[k] = __int_as_float(0x7fc00000);  // quiet NaN
        }
        store(output + idx, acc);
    }
}

template <typename T, typename E, int LANES>
cudaError_t launch(const void* value, const int32_t* shapes, const int32_t* starts, const void* loc,
                   const void* attn, int64_t N, int64_t S, int64_t M, int64_t groups, int64_t L, int64_t Lq,
                   int64_t P, void* out, cudaStream_t stream) {
    const int64_t total = N * Lq * M * groups;
    if (total == 0) return cudaSuccess;
    const int threads = 256;
    const int64_t blocks = (total + threads - 1) / threads;
    const unsigned grid = static_cast<unsigned>(blocks < 65535 * 32 ? blocks : 65535 * 32);
    msda_forward_kernel<T, E, LANES><<<grid, threads, 0, stream>>>(
        static_cast<const E*>(value), shapes, starts, static_cast<const T*>(loc), static_cast<const T*>(attn), N, S,
        M, groups, L, Lq, P, static_cast<E*>(out));
    return cudaGetLastError();
}

bool aligned4(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 3u) == 0; }

}  // namespace

cudaError_t msda_cuda_forward(MsdaCudaType type, const void* value, const int32_t* spatial_shapes,
                              const int32_t* level_start_index, const void* sampling_locations,
                              const void* attention_weights, int64_t N, int64_t S, int64_t M, int64_t D,
                              int64_t L, int64_t Lq, int64_t P, void* output, cudaStream_t stream) {
    if (N < 0 || S < 0 || Lq < 0 || M < 1 || D < 1 || L < 1 || P < 1) return cudaErrorInvalidValue;
    if (type == MsdaCudaType::kFloat32) {
        return launch<float, float, 1>(value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights, N, S, M, D, L, Lq, P, output, stream);
    }
    if (type == MsdaCudaType::kFloat16) {
        if (D % 2 == 0 && aligned4(value) && aligned4(output)) {
            return launch<__half, __half2, 2>(value, spatial_shapes, level_start_index, sampling_locations,
                                              attention_weights, N, S, M, D / 2, L, Lq, P, output, stream);
        }
        return launch<__half, __half, 1>(value, spatial_shapes, level_start_index, sampling_locations,
                                         attention_weights, N, S, M, D, L, Lq, P, output, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace mdqe
