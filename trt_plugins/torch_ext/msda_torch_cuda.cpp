// PyTorch binding of the MSDeformAttn CUDA kernel, built explicitly by `python -m mdqe.ops.msda.build cuda`
// (mdqe/ops/msda/build.py, torch.utils.cpp_extension.load) on a machine with nvcc. Inference only (no backward).
// The caller passes the CUDA stream (torch.cuda.current_stream(device).cuda_stream), so this file
// needs only torch's core headers (it compiles against a CPU build of torch too).
#include <c10/core/DeviceGuard.h>
#include <cuda_runtime_api.h>
#include <torch/extension.h>

#include "mdqe_msda/msda_cuda.h"

namespace {

torch::Tensor msda_forward(const torch::Tensor& value, const torch::Tensor& spatial_shapes,
                           const torch::Tensor& level_start_index, const torch::Tensor& sampling_locations,
                           const torch::Tensor& attention_weights, int64_t stream) {
    TORCH_CHECK(value.is_cuda(), "MSDeformAttn cuda: value must be a CUDA tensor");
    TORCH_CHECK(sampling_locations.device() == value.device() && attention_weights.device() == value.device(),
                "MSDeformAttn cuda: value, sampling_locations and attention_weights must be on one device");
    TORCH_CHECK(value.scalar_type() == torch::kFloat32 || value.scalar_type() == torch::kFloat16,
                "MSDeformAttn cuda: value must be float32 or float16, got ", value.scalar_type());
    TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                    attention_weights.scalar_type() == value.scalar_type(),
                "MSDeformAttn cuda: sampling_locations and attention_weights must have value's dtype");
    TORCH_CHECK(value.dim() == 4 && sampling_locations.dim() == 6 && attention_weights.dim() == 5,
                "MSDeformAttn cuda: expected value [N,S,M,D], sampling_locations [N,Lq,M,L,P,2], "
                "attention_weights [N,Lq,M,L,P]");
    const c10::DeviceGuard guard(value.device());
    const auto v = value.contiguous();
    const auto loc = sampling_locations.contiguous();
    const auto attn = attention_weights.contiguous();
    const auto shapes = spatial_shapes.to(value.device(), torch::kInt32).contiguous();
    const auto starts = level_start_index.to(value.device(), torch::kInt32).contiguous();
    const int64_t N = v.size(0), S = v.size(1), M = v.size(2), D = v.size(3);
    const int64_t Lq = loc.size(1), L = loc.size(3), P = loc.size(4);
    TORCH_CHECK(shapes.dim() == 2 && shapes.size(0) == L && shapes.size(1) == 2 && starts.numel() == L,
                "MSDeformAttn cuda: spatial_shapes must be [L,2] and level_start_index [L] with L = ", L);
    auto out = torch::empty({N, Lq, M * D}, v.options());
    const auto type = v.scalar_type() == torch::kFloat32 ? mdqe::MsdaCudaType::kFloat32 : mdqe::MsdaCudaType::kFloat16;
    const cudaError_t err = mdqe::msda_cuda_forward(
        type, v.data_ptr(), shapes.data_ptr<int32_t>(), starts.data_ptr<int32_t>(), loc.data_ptr(), attn.data_ptr(), N,
        S, M, D, L, Lq, P, out.data_ptr(), reinterpret_cast<cudaStream_t>(stream));
    TORCH_CHECK(err == cudaSuccess, "MSDeformAttn cuda: kernel launch failed: ", cudaGetErrorString(err));
    return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &msda_forward, "MSDeformAttn forward (CUDA, fp32/fp16, inference only)",
          py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"),
          py::arg("sampling_locations"), py::arg("attention_weights"), py::arg("stream"));
}
