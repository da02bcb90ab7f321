// MSDeformAttn CUDA kernel (fp32 and fp16, fp32 accumulation). Host-side launcher, callable
// from plain C++ (the TensorRT plugin, the PyTorch extension). All pointers are device pointers;
// spatial_shapes [L,2] and level_start_index [L] are INT32 on the device.
#ifndef MDQE_MSDA_CUDA_H
#define MDQE_MSDA_CUDA_H

#include <cuda_runtime_api.h>
#include <stdint.h>

namespace mdqe {

enum class MsdaCudaType : int32_t { kFloat32 = 0, kFloat16 = 1 };

// Enqueue the forward pass on `stream`. Returns cudaSuccess, cudaErrorInvalidValue for bad sizes,
// or the launch error. Levels whose shape/start do not fit into S are skipped (never read out of
// bounds); callers validate shapes on the host where they can.
cudaError_t msda_cuda_forward(MsdaCudaType type, const void* value, const int32_t* spatial_shapes,
                              const int32_t* level_start_index, const void* sampling_locations,
                              const void* attention_weights, int64_t N, int64_t S, int64_t M, int64_t D,
                              int64_t L, int64_t Lq, int64_t P, void* output, cudaStream_t stream);

}  // namespace mdqe

#endif  // MDQE_MSDA_CUDA_H
