// MSDeformAttn bilinear-sampling core, shared by the CPU kernel, the CUDA kernel and the
// TensorRT plugin (one definition of the math). Compiles as plain C++17 and as CUDA.
//
// Semantics (docs/INTERFACES.md section 2, docs/native.md):
//   pixel coordinate x = loc_x * W - 0.5, y = loc_y * H - 0.5  (grid_sample, align_corners=False)
//   bilinear interpolation of the 4 neighbouring pixel centres; a corner outside the map
//   contributes 0 (zero padding).
//   A sample whose location is not finite (NaN, +-inf), or whose four corners all lie outside the
//   map (pixel x <= -1 or x >= W, or the same for y), contributes exactly 0 whatever its attention
//   weight (even NaN); the other samples of the query are unaffected. The torch form
//   (mdqe/ops/ms_deform_attn.py) implements the same rule; tests compare all of them.
//   level_start_index must be the running sum of H*W: the CPU kernel returns
//   MDQE_MSDA_ERR_BAD_LEVEL_START, the CUDA kernel (device values, no sync) writes NaN outputs.
#ifndef MDQE_MSDA_CORE_H
#define MDQE_MSDA_CORE_H

#include <stdint.h>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define MDQE_HD __host__ __device__ __forceinline__
#else
#define MDQE_HD inline
#endif
#define MDQE_RESTRICT __restrict__

namespace mdqe {

// The four bilinear corners of one sample: element offsets (in pixels, relative to the
// level's first pixel) and interpolation weights. A corner outside the map has weight 0
// and valid = 0; its offset is 0 so that it never addresses memory outside the level.
struct MsdaCorners {
    int32_t offset[4];  // (y0,x0) (y0,x1) (y1,x0) (y1,x1) as y * W + x
    float weight[4];
    int32_t valid[4];
};

// Compute the corners of pixel coordinate (x, y) (pixel centres at integers) on an H x W map.
// Returns false when no corner lies inside the map (the sample contributes nothing).
MDQE_HD bool msda_corners_at(float x, float y, int32_t H, int32_t W, MsdaCorners& c) {
    // Written so that NaN fails the test; also keeps the float->int conversions in range.
    if (!(x > -1.0f && y > -1.0f && x < static_cast<float>(W) && y < static_cast<float>(H))) {
        return false;
    }
    // floor() by exact truncation + correction: x in (-1, W) gives x0 in [-1, W-1] for every
    // float x (no rounding step that could push x0 to W).
    int32_t x0 = static_cast<int32_t>(x);
    int32_t y0 = static_cast<int32_t>(y);
    if (static_cast<float>(x0) > x) --x0;
    if (static_cast<float>(y0) > y) --y0;
    const int32_t x1 = x0 + 1;
    const int32_t y1 = y0 + 1;
    const float fx = x - static_cast<float>(x0);  // weight of the x1 column
    const float fy = y - static_cast<float>(y0);  // weight of the y1 row
    const float gx = 1.0f - fx;
    const float gy = 1.0f - fy;
    const bool vx0 = x0 >= 0, vx1 = x1 < W, vy0 = y0 >= 0, vy1 = y1 < H;
    c.valid[0] = vy0 && vx0;
    c.valid[1] = vy0 && vx1;
    c.valid[2] = vy1 && vx0;
    c.valid[3] = vy1 && vx1;
    c.weight[0] = c.valid[0] ? gy * gx : 0.0f;
    c.weight[1] = c.valid[1] ? gy * fx : 0.0f;
    c.weight[2] = c.valid[2] ? fy * gx : 0.0f;
    c.weight[3] = c.valid[3] ? fy * fx : 0.0f;
    c.offset[0] = c.valid[0] ? y0 * W + x0 : 0;
    c.offset[1] = c.valid[1] ? y0 * W + x1 : 0;
    c.offset[2] = c.valid[2] ? y1 * W + x0 : 0;
    c.offset[3] = c.valid[3] ? y1 * W + x1 : 0;
    return true;
}

// Corners of normalised location (loc_x, loc_y): pixel = loc * size - 0.5 (align_corners=False).
MDQE_HD bool msda_bilinear_setup(float loc_x, float loc_y, int32_t H, int32_t W, MsdaCorners& c) {
    return msda_corners_at(loc_x * static_cast<float>(W) - 0.5f, loc_y * static_cast<float>(H) - 0.5f, H, W, c);
}

// acc[lane] += w * v for each lane of one stored element (fp32: 1 lane; CUDA half: 1; half2: 2).
MDQE_HD void msda_fma(float v, float w, float* acc) { acc[0] += w * v; }
#if defined(__CUDACC__)
__device__ __forceinline__ void msda_fma(__half v, float w, float* acc) { acc[0] += w * __half2float(v); }
__device__ __forceinline__ void msda_fma(__half2 v, float w, float* acc) {
    const float2 f = __half22float2(v);
    acc[0] += w * f.x;
    acc[1] += w * f.y;
}
#endif

// Weighted accumulation of one sample: acc += attn * bilinear(level)[channels].
//   level:  the level's first pixel, already offset to the head's first channel
//   pixel_stride: elements of type T between two pixels (M * D, or M * D / 2 for half2)
//   count:  number of consecutive elements of type T to accumulate (lanes each)
template <typename T>
MDQE_HD void msda_accumulate(const T* MDQE_RESTRICT level, int64_t pixel_stride, const MsdaCorners& c,
                             float attn, float* MDQE_RESTRICT acc, int32_t count, int32_t lanes = 1) {
    if (c.valid[0] & c.valid[1] & c.valid[2] & c.valid[3]) {  // interior sample: one pass over acc
        const float w0 = attn * c.weight[0], w1 = attn * c.weight[1], w2 = attn * c.weight[2], w3 = attn * c.weight[3];
        const T* MDQE_RESTRICT p0 = level + static_cast<int64_t>(c.offset[0]) * pixel_stride;
        const T* MDQE_RESTRICT p1 = level + static_cast<int64_t>(c.offset[1]) * pixel_stride;
        const T* MDQE_RESTRICT p2 = level + static_cast<int64_t>(c.offset[2]) * pixel_stride;
        const T* MDQE_RESTRICT p3 = level + static_cast<int64_t>(c.offset[3]) * pixel_stride;
        for (int32_t e = 0; e < count; ++e) {
            msda_fma(p0[e], w0, acc + e * lanes);
            msda_fma(p1[e], w1, acc + e * lanes);
            msda_fma(p2[e], w2, acc + e * lanes);
            msda_fma(p3[e], w3, acc + e * lanes);
        }
        return;
    }
    for (int k = 0; k < 4; ++k) {
        if (!c.valid[k]) continue;
        const float w = attn * c.weight[k];
        const T* MDQE_RESTRICT p = level + static_cast<int64_t>(c.offset[k]) * pixel_stride;
        for (int32_t e = 0; e < count; ++e) msda_fma(p[e], w, acc + e * lanes);
    }
}

}  // namespace mdqe

#endif  // MDQE_MSDA_CORE_H
