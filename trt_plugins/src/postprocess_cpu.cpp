// Post-processing kernels of the runtime (see mdqe_msda/postprocess_cpu.h): the per-clip filter's
// mask pass and soft-IoU NMS, the tracker's mask intersections and the final masks' run lengths.
// Single-threaded (the runtime overlaps them with the model). Built with -ffp-contract=off so
// float32 expressions round as numpy's do.
#include "mdqe_msda/postprocess_cpu.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

// MDQE_PP_PORTABLE (a compile definition) leaves the x86 paths out, as on a non-x86 machine
// (.ci/native_checks.sh compiles it so).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(MDQE_PP_PORTABLE)
#include <immintrin.h>
#define MDQE_PP_X86 1
#else
#define MDQE_PP_X86 0
#endif

#if MDQE_PP_X86 && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define MDQE_PP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MDQE_PP_CLONES
#endif

namespace {

// float32 exp(x) for x in [-87.3, 88.7] (clamped outside): Cody-Waite reduction and the Cephes
// expf polynomial, branch-free so that loops over it vectorise; max relative error about 2 ulp.
inline float exp_f32(float x) {
    x = x < -87.33654f ? -87.33654f : x;
    x = x > 88.72283f ? 88.72283f : x;
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

constexpr int kLanes = 8;

// x <- sigmoid(x) over n contiguous values; adds their sum
MDQE_PP_CLONES void sigmoid_inplace(float* x, int64_t n, double* sum) {
    for (int64_t i = 0; i < n; ++i) x[i] = sigmoid_f32(x[i]);
    float acc[kLanes] = {0};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) acc[l] += x[i + l];
    double s = 0.0;
    for (int l = 0; l < kLanes; ++l) s += acc[l];
    for (; i < n; ++i) s += x[i];
    *sum += s;
}

// sigmoid of n logits (overwritten); adds the sum and the number of those > 0.5 (mask quality)
MDQE_PP_CLONES void sigmoid_quality(float* x, int64_t n, double* sum, int64_t* count) {
    for (int64_t i = 0; i < n; ++i) x[i] = sigmoid_f32(x[i]);
    double acc[kLanes] = {0};
    int32_t cnt[kLanes] = {0};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) {
            const bool on = x[i + l] > 0.5f;
            acc[l] += on ? static_cast<double>(x[i + l]) : 0.0;
            cnt[l] += on;
        }
    double s = 0.0;
    int64_t c = 0;
    for (int l = 0; l < kLanes; ++l) {
        s += acc[l];
        c += cnt[l];
    }
    for (; i < n; ++i)
        if (x[i] > 0.5f) {
            s += x[i];
            ++c;
        }
    *sum += s;
    *count += c;
}

MDQE_PP_CLONES void copy_even(const float* src, int64_t n, float* dst) {
    for (int64_t x = 0; x < n; ++x) dst[x] = src[2 * x];
}

// bits (x > 0) of n values into words (LSB first); returns the number of set bits
int64_t pack_positive_scalar(const float* x, int64_t n, uint64_t* words) {
    int64_t total = 0;
    for (int64_t q = 0; q * 64 < n; ++q) {
        const int64_t len = std::min<int64_t>(64, n - q * 64);
        uint64_t word = 0;
        for (int64_t b = 0; b < len; ++b) word |= static_cast<uint64_t>(x[q * 64 + b] > 0.0f) << b;
        words[q] = word;
        total += __builtin_popcountll(word);
    }
    return total;
}

// dst[i] += src[i] over n values (float32, no FMA), with the bits of the sums > 0 as above
int64_t add_positive_scalar(float* dst, const float* src, int64_t n, uint64_t* words) {
    for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
    return words ? pack_positive_scalar(dst, n, words) : 0;
}

#if MDQE_PP_X86
// The same with AVX2: one compare and movemask per 8 values (x > 0 ordered: NaN gives 0, as in C); the
// last n % 8 values as above.
__attribute__((target("avx2"))) inline uint64_t positive_mask8(__m256 v) {
    return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ)));
}

__attribute__((target("avx2"))) int64_t pack_positive_avx2(const float* x, int64_t n, uint64_t* words) {
    int64_t total = 0, i = 0;
    uint64_t word = 0;
    for (; i + 64 <= n; i += 64) {      // whole words: eight independent masks, fixed shifts
        uint64_t m[8];
        for (int k = 0; k < 8; ++k) m[k] = positive_mask8(_mm256_loadu_ps(x + i + 8 * k)) << (8 * k);
        const uint64_t w = ((m[0] | m[1]) | (m[2] | m[3])) | ((m[4] | m[5]) | (m[6] | m[7]));
        words[i / 64] = w;
        total += __builtin_popcountll(w);
    }
    for (; i + 8 <= n; i += 8) {
        word |= positive_mask8(_mm256_loadu_ps(x + i)) << (i % 64);
        if (i % 64 == 56) {
            words[i / 64] = word;
            total += __builtin_popcountll(word);
            word = 0;
        }
    }
    if (i < n) {                        // the tail joins the partial word
        for (int64_t b = i; b < n; ++b) word |= static_cast<uint64_t>(x[b] > 0.0f) << (b % 64);
    }
    if (n % 64) {
        words[n / 64] = word;
        total += __builtin_popcountll(word);
    }
    return total;
}

__attribute__((target("avx2"))) int64_t add_positive_avx2(float* dst, const float* src, int64_t n, uint64_t* words) {
    int64_t total = 0, i = 0;
    uint64_t word = 0;
    for (; i + 64 <= n; i += 64) {      // whole words: eight independent masks, fixed shifts
        uint64_t m[8];
        for (int k = 0; k < 8; ++k) {
            const __m256 v = _mm256_add_ps(_mm256_loadu_ps(dst + i + 8 * k), _mm256_loadu_ps(src + i + 8 * k));
            _mm256_storeu_ps(dst + i + 8 * k, v);
            m[k] = positive_mask8(v) << (8 * k);
        }
        const uint64_t w = ((m[0] | m[1]) | (m[2] | m[3])) | ((m[4] | m[5]) | (m[6] | m[7]));
        if (words) words[i / 64] = w;
        total += __builtin_popcountll(w);
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_loadu_ps(src + i));
        _mm256_storeu_ps(dst + i, v);
        word |= positive_mask8(v) << (i % 64);
        if (i % 64 == 56) {
            if (words) words[i / 64] = word;
            total += __builtin_popcountll(word);
            word = 0;
        }
    }
    for (int64_t b = i; b < n; ++b) {
        dst[b] += src[b];
        word |= static_cast<uint64_t>(dst[b] > 0.0f) << (b % 64);
    }
    if (n % 64) {
        if (words) words[n / 64] = word;
        total += __builtin_popcountll(word);
    }
    return words ? total : 0;
}

// The AVX2 paths run when the CPU has AVX2, unless MDQE_PP_SIMD=off in the environment selects the
// portable ones (what non-x86 machines such as a Jetson run; the tests compare both).
bool have_avx2() {
    static const bool yes = [] {
        const char* v = std::getenv("MDQE_PP_SIMD");
        if (v && std::strcmp(v, "off") == 0) return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }();
    return yes;
}
#endif

int64_t pack_positive(const float* x, int64_t n, uint64_t* words) {
#if MDQE_PP_X86
    if (have_avx2()) return pack_positive_avx2(x, n, words);
#endif
    return pack_positive_scalar(x, n, words);
}

// dst += src over n values; words (NULL: none) get the bits of the sums > 0; returns their number
int64_t add_positive(float* dst, const float* src, int64_t n, uint64_t* words) {
#if MDQE_PP_X86
    if (have_avx2()) return add_positive_avx2(dst, src, n, words);
#endif
    return add_positive_scalar(dst, src, n, words);
}

bool bad(int64_t v) { return v < 0; }

}  // namespace

extern "C" {

int mdqe_pp_abi_version(void) { return MDQE_PP_ABI_VERSION; }

int mdqe_pp_filter_masks(const float* masks, int64_t T, int64_t h, int64_t w, const int64_t* idx, int64_t K, int64_t F,
                         int64_t frame_step, uint8_t* nonblank, double* quality_sum, int64_t* quality_count,
                         double* soft_sum, int64_t* hard_count, float* overlap, uint64_t* bits) {
    if (bad(T) || bad(h) || bad(w) || bad(K) || bad(F) || F > T || frame_step < 1) return MDQE_PP_ERR_BAD_ARGUMENT;
    if (K == 0) return 0;
    if (!masks || !idx || !nonblank || !quality_sum || !quality_count || !soft_sum || !hard_count || !overlap)
        return MDQE_PP_ERR_BAD_ARGUMENT;
    const int64_t h2 = h / 2, w2 = w / 2, nf = (F + frame_step - 1) / frame_step;
    const int64_t P = nf * h2 * w2, rw = (w + 63) / 64;
    std::vector<float> positives(static_cast<size_t>(std::max<int64_t>(h * w, 1)));
    std::vector<float> soft(static_cast<size_t>(std::max<int64_t>(P, 1)));   // one candidate's NMS sample
    std::vector<uint64_t> frame_bits(static_cast<size_t>(h * rw));   // when the caller wants no bits
    std::vector<uint8_t> row_positive(static_cast<size_t>(std::max<int64_t>(h, 1)));
    std::vector<int32_t> hard_all;                  // hard pixels of the candidates scanned so far
    std::vector<int64_t> hard_at(static_cast<size_t>(K), 0);
    // Candidates in reverse rank order: when candidate k is scanned, its sample is in cache and the hard
    // pixels of every later (lower-ranked) candidate j are known, so num[k, j] is summed right away
    // and no [K, P] array of samples is kept.
    for (int64_t k = K - 1; k >= 0; --k) {
        const float* v = masks + idx[k] * T * h * w;
        double qs = 0.0, ss = 0.0;
        int64_t qc = 0, hc = 0;
        bool any = false;
        hard_at[k] = static_cast<int64_t>(hard_all.size());
        for (int64_t f = 0; f < F; ++f) {
            const bool sampled = f % frame_step == 0;
            float* out = soft.data() + (f / frame_step) * h2 * w2;
            uint64_t* fbits = bits ? bits + (k * F + f) * h * rw : frame_bits.data();
            int64_t np = 0;
            // rows: blank test, bit set, the positive logits (by their bits), the NMS sample
            for (int64_t y = 0; y < h; ++y) {
                const float* row = v + (f * h + y) * w;
                uint64_t* rb = fbits + y * rw;
                row_positive[y] = pack_positive(row, w, rb) > 0;
                if (row_positive[y]) {
                    any = true;
                    for (int64_t q = 0; q < rw; ++q)
                        for (uint64_t word = rb[q]; word; word &= word - 1)
                            positives[np++] = row[q * 64 + __builtin_ctzll(word)];
                }
                if (sampled && y % 2 == 0 && y / 2 < h2) copy_even(row, w2, out + (y / 2) * w2);
            }
            sigmoid_quality(positives.data(), np, &qs, &qc);
            if (!sampled) continue;
            sigmoid_inplace(out, h2 * w2, &ss);
            // soft > 0.5 needs a positive logit (exp_f32(t) >= 1 for t >= 0): only the sampled pixels
            // (even columns of even rows) whose bit is set, in ascending order
            for (int64_t y2 = 0; y2 < h2; ++y2) {
                if (!row_positive[2 * y2]) continue;
                const float* o = out + y2 * w2;
                const uint64_t* rb = fbits + 2 * y2 * rw;
                const int32_t base = static_cast<int32_t>((f / frame_step) * h2 * w2 + y2 * w2);
                for (int64_t q = 0; q < rw; ++q)
                    for (uint64_t word = rb[q] & 0x5555555555555555ULL; word; word &= word - 1) {
                        const int64_t x = (q * 64 + __builtin_ctzll(word)) / 2;
                        if (x < w2 && o[x] > 0.5f) {
                            hard_all.push_back(base + static_cast<int32_t>(x));
                            ++hc;
                        }
                    }
            }
        }
        nonblank[k] = any ? 1 : 0;
        quality_sum[k] = qs;
        quality_count[k] = qc;
        soft_sum[k] = ss;
        hard_count[k] = hc;
        overlap[k] = 0.0f;
        if (!any) continue;                           // blank: out of the NMS
        // soft IoU of k (higher-ranked) with each later non-blank j: num = sum of k's sample over j's
        // hard pixels, in four chains (pixel q to chain q % 4, the last hard_count % 4 to chain 0), in
        // double, as (c0 + c1) + (c2 + c3); overlap[j] = max over such k
        for (int64_t j = k + 1; j < K; ++j) {
            if (!nonblank[j]) continue;
            const int32_t* hard = hard_all.data() + hard_at[j];
            const int64_t nh = hard_count[j];
            double part[4] = {0.0, 0.0, 0.0, 0.0};
            int64_t q = 0;
            for (; q + 4 <= nh; q += 4)
                for (int l = 0; l < 4; ++l) part[l] += soft[hard[q + l]];
            for (; q < nh; ++q) part[0] += soft[hard[q]];
            const double num = (part[0] + part[1]) + (part[2] + part[3]);
            const double den = ss + static_cast<double>(nh) - num + 1.0;
            overlap[j] = std::max(overlap[j], static_cast<float>(num / den));
        }
    }
    return 0;
}

// bits of the rows of one [h, w] map (rows of rw words); returns the number of set bits
static int64_t map_bits(const float* m, int64_t h, int64_t w, uint64_t* bits) {
    const int64_t rw = (w + 63) / 64;
    int64_t a = 0;
    for (int64_t y = 0; y < h; ++y) a += pack_positive(m + y * w, w, bits + y * rw);
    return a;
}

int mdqe_pp_positive_bits(const float* X, int64_t TX, const int64_t* rx, int64_t n, const int64_t* fx, int64_t F,
                          int64_t h, int64_t w, uint64_t* bits) {
    if (bad(TX) || bad(n) || bad(F) || bad(h) || bad(w)) return MDQE_PP_ERR_BAD_ARGUMENT;
    if (n && F && (!X || !rx || !fx || !bits)) return MDQE_PP_ERR_BAD_ARGUMENT;
    const int64_t wpf = h * ((w + 63) / 64);
    for (int64_t k = 0; k < n; ++k)
        for (int64_t f = 0; f < F; ++f) map_bits(X + (rx[k] * TX + fx[f]) * h * w, h, w, bits + (k * F + f) * wpf);
    return 0;
}

int mdqe_pp_bit_intersections(const uint64_t* A, int64_t TA, const int64_t* ra, int64_t na, const int64_t* fa,
                              const uint64_t* B, int64_t TB, const int64_t* rb, int64_t nb, const int64_t* fb,
                              int64_t F, int64_t wpf, int64_t* inter, int64_t* area_a, int64_t* area_b) {
    if (bad(TA) || bad(TB) || bad(na) || bad(nb) || bad(F) || bad(wpf)) return MDQE_PP_ERR_BAD_ARGUMENT;
    if (!inter || !area_a || !area_b || (na && F && (!A || !ra || !fa)) || (nb && F && (!B || !rb || !fb)))
        return MDQE_PP_ERR_BAD_ARGUMENT;
    // per mask and frame: the first word and one past the last non-zero word, and the area
    auto ranges = [&](const uint64_t* X, int64_t TX, const int64_t* rx, const int64_t* fx, int64_t nx,
                      std::vector<int64_t>& lo, std::vector<int64_t>& hi, int64_t* area) {
        lo.assign(static_cast<size_t>(nx * F), 0);
        hi.assign(static_cast<size_t>(nx * F), 0);
        for (int64_t i = 0; i < nx; ++i) {
            int64_t a = 0;
            for (int64_t f = 0; f < F; ++f) {
                const uint64_t* m = X + (rx[i] * TX + fx[f]) * wpf;
                int64_t first = -1, last = -1;
                for (int64_t q = 0; q < wpf; ++q)
                    if (m[q]) {
                        a += __builtin_popcountll(m[q]);
                        if (first < 0) first = q;
                        last = q + 1;
                    }
                if (first >= 0) {
                    lo[i * F + f] = first;
                    hi[i * F + f] = last;
                }
            }
            area[i] = a;
        }
    };
    std::vector<int64_t> loa, hia, lob, hib;
    ranges(A, TA, ra, fa, na, loa, hia, area_a);
    ranges(B, TB, rb, fb, nb, lob, hib, area_b);
    for (int64_t i = 0; i < na; ++i)
        for (int64_t j = 0; j < nb; ++j) {
            int64_t c = 0;
            for (int64_t f = 0; f < F; ++f) {
                const uint64_t* x = A + (ra[i] * TA + fa[f]) * wpf;
                const uint64_t* y = B + (rb[j] * TB + fb[f]) * wpf;
                const int64_t q0 = std::max(loa[i * F + f], lob[j * F + f]);
                const int64_t q1 = std::min(hia[i * F + f], hib[j * F + f]);
                for (int64_t q = q0; q < q1; ++q) c += __builtin_popcountll(x[q] & y[q]);
            }
            inter[i * nb + j] = c;
        }
    return 0;
}

int mdqe_pp_accumulate(float* S, int64_t TS, const int64_t* rs, const int64_t* fs, const float* X, int64_t TX,
                       const int64_t* rx, const uint8_t* fresh, int64_t n, int64_t F, int64_t h, int64_t w,
                       uint64_t* bits) {
    if (bad(TS) || bad(TX) || bad(n) || bad(F) || bad(h) || bad(w)) return MDQE_PP_ERR_BAD_ARGUMENT;
    if (n && F && (!S || !rs || !fs || !X || !rx)) return MDQE_PP_ERR_BAD_ARGUMENT;
    const int64_t hw = h * w, rw = (w + 63) / 64, wpf = h * rw;
    for (int64_t k = 0; k < n; ++k)
        for (int64_t f = 0; f < F; ++f) {
            float* dst = S + (rs[k] * TS + fs[f]) * hw;
            const float* src = X + (rx[k] * TX + f) * hw;
            uint64_t* b = bits ? bits + (rs[k] * TS + fs[f]) * wpf : nullptr;
            if (fresh && fresh[k * F + f]) {             // the map's first term: no read of the old sum
                std::memcpy(dst, src, static_cast<size_t>(hw) * sizeof(float));
                if (b) map_bits(dst, h, w, b);
                continue;
            }
            for (int64_t y = 0; y < h; ++y) add_positive(dst + y * w, src + y * w, w, b ? b + y * rw : nullptr);
        }
    return 0;
}

// The bounding box (rows pr0..pr1, columns pc0..pc1; pr0 = -1 when none) of the pixels of a map whose
// bit is set (rows of rw words).
static void bits_box(const uint64_t* bits, int64_t h, int64_t rw, int64_t& pr0, int64_t& pr1, int64_t& pc0,
                     int64_t& pc1) {
    for (int64_t r = 0; r < h; ++r) {
        const uint64_t* words = bits + r * rw;
        for (int64_t q = 0; q < rw; ++q) {
            if (!words[q]) continue;
            if (pr0 < 0) pr0 = r;
            pr1 = r;
            pc0 = std::min<int64_t>(pc0, q * 64 + __builtin_ctzll(words[q]));
            pc1 = std::max<int64_t>(pc1, q * 64 + 63 - __builtin_clzll(words[q]));
        }
    }
}

// Runs of one map L / d (d = 1: no division). The box of its positive pixels comes from mbits, the bit
// set of L > 0: L > 0 covers every L / d > 0 (a positive x / d may only underflow to 0), and outputs
// outside the taps of the positive box are exactly non-positive.
MDQE_PP_CLONES static int mask_runs_one(const float* L, float d, const uint64_t* mbits, int64_t h, int64_t w,
                                        const int64_t* r0, const int64_t* r1, const float* a0, const float* a1,
                                        int64_t H, const int64_t* c0, const int64_t* c1, const float* b0,
                                        const float* b1, int64_t W, std::vector<float>& horT,
                                        std::vector<uint32_t>& runs) {
    runs.clear();
    int64_t pr0 = -1, pr1 = -1, pc0 = w, pc1 = -1;
    bits_box(mbits, h, (w + 63) / 64, pr0, pr1, pc0, pc1);
    if (pr0 < 0) return 0;
    // output rows/cols whose taps reach the positive rows/cols (taps are monotone)
    const int64_t ya = std::lower_bound(r1, r1 + H, pr0) - r1, yb = std::upper_bound(r0, r0 + H, pr1) - r0;
    const int64_t xa = std::lower_bound(c1, c1 + W, pc0) - c1, xb = std::upper_bound(c0, c0 + W, pc1) - c0;
    if (ya >= yb || xa >= xb) return 0;
    const int64_t lo = r0[ya], hi = r1[yb - 1] + 1, nr = hi - lo, nx = xb - xa;
    horT.resize(static_cast<size_t>(nx * nr));
    for (int64_t r = 0; r < nr; ++r) {
        const float* row = L + (lo + r) * w;
        if (d == 1.0f) {
            for (int64_t x = 0; x < nx; ++x) {
                const int64_t X = xa + x;
                horT[x * nr + r] = b0[X] * row[c0[X]] + b1[X] * row[c1[X]];
            }
        } else {                                    // the mean's values, as a divided map holds them
            for (int64_t x = 0; x < nx; ++x) {
                const int64_t X = xa + x;
                horT[x * nr + r] = b0[X] * (row[c0[X]] / d) + b1[X] * (row[c1[X]] / d);
            }
        }
    }
    uint64_t last = 0, pos;
    bool prev = false, any = false;
    auto emit = [&](uint64_t at, bool v) {
        if (v != prev) {
            runs.push_back(static_cast<uint32_t>(at - last));
            last = at;
            prev = v;
        }
    };
    for (int64_t x = 0; x < nx; ++x) {
        const float* col = horT.data() + x * nr;
        const uint64_t base = static_cast<uint64_t>(xa + x) * H;
        if (ya > 0) emit(base, false);
        for (int64_t y = ya; y < yb; ++y) {
            const bool v = a0[y] * col[r0[y] - lo] + a1[y] * col[r1[y] - lo] > 0.0f;
            any = any || v;
            emit(base + y, v);
        }
        if (yb < H) emit(base + yb, false);
    }
    if (!any) {
        runs.clear();
        return 0;
    }
    pos = static_cast<uint64_t>(xb) * H;
    if (pos < static_cast<uint64_t>(H * W)) emit(pos, false);
    const uint64_t total = static_cast<uint64_t>(H * W);
    if (total > last) runs.push_back(static_cast<uint32_t>(total - last));
    return 0;
}

int mdqe_pp_mask_runs(const float* S, int64_t TS, const int64_t* rows, int64_t pos, const int32_t* divisors,
                      const uint64_t* bits, int64_t n, int64_t h, int64_t w, const int64_t* r0, const int64_t* r1,
                      const float* a0, const float* a1, int64_t H, const int64_t* c0, const int64_t* c1,
                      const float* b0, const float* b1, int64_t W, uint32_t* counts, int64_t cap,
                      int64_t* offsets) {
    if (bad(n) || bad(h) || bad(w) || TS < 1 || pos < 0 || pos >= TS || H < 1 || W < 1 || bad(cap))
        return MDQE_PP_ERR_BAD_ARGUMENT;
    if (!offsets || (n && (!S || !rows || !r0 || !r1 || !a0 || !a1 || !c0 || !c1 || !b0 || !b1 || !counts)))
        return MDQE_PP_ERR_BAD_ARGUMENT;
    for (int64_t i = 0; i < n; ++i)
        if (rows[i] < 0 || (divisors && divisors[i] < 1)) return MDQE_PP_ERR_BAD_ARGUMENT;
    const int64_t hw = h * w, wpf = h * ((w + 63) / 64);
    std::vector<float> horT;
    std::vector<uint32_t> runs;
    std::vector<uint64_t> map_words(bits ? 0 : static_cast<size_t>(wpf));   // bits of a map, when not given
    int64_t used = 0;
    offsets[0] = 0;
    for (int64_t i = 0; i < n; ++i) {
        const float d = divisors ? static_cast<float>(divisors[i]) : 1.0f;
        const float* L = S + (rows[i] * TS + pos) * hw;
        const uint64_t* mbits = bits ? bits + i * wpf : map_words.data();
        if (!bits) map_bits(L, h, w, map_words.data());
        mask_runs_one(L, d, mbits, h, w, r0, r1, a0, a1, H, c0, c1, b0, b1, W, horT, runs);
        if (used + static_cast<int64_t>(runs.size()) > cap) return MDQE_PP_ERR_CAPACITY;
        std::copy(runs.begin(), runs.end(), counts + used);
        used += static_cast<int64_t>(runs.size());
        offsets[i + 1] = used;
    }
    return 0;
}

}  // extern "C"
