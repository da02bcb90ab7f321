// Hand-computed cases for the post-processing kernels (mdqe_msda/postprocess_cpu.h); the Python
// tests (tests/test_postprocess_native.py) compare them with the numpy forms on larger inputs.
// Run under ASan/UBSan in CI (MDQE_SANITIZE=ON).
#include <cmath>
#include <cstdint>
#include <vector>

#include "check.h"
#include "mdqe_msda/postprocess_cpu.h"

namespace {

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

void test_filter_masks() {
    // masks [Q=3, T=2, h=2, w=4]; F = 2, every frame sampled (sample: rows 0, columns 0 and 2)
    std::vector<float> m(3 * 2 * 2 * 4, -3.0f);
    auto at = [&](int q, int t, int y, int x) -> float& { return m[((q * 2 + t) * 2 + y) * 4 + x]; };
    at(2, 0, 0, 0) = 2.0f;   // sampled (row 0, column 0)
    at(2, 1, 1, 3) = 1.0f;   // not sampled (row 1)
    at(1, 0, 0, 0) = 9.0f;   // sampled
    uint8_t nonblank[2];
    double qsum[2], ssum[2];
    int64_t qcnt[2], hcnt[2];
    float overlap[2];
    std::vector<uint64_t> bits(2 * 2 * 2);   // [K, F, h * 1 word]
    // candidates 2, 0 (query 1 never read): 0 is blank
    const int64_t idx[2] = {2, 0};
    CHECK(mdqe_pp_filter_masks(m.data(), 2, 2, 4, idx, 2, 2, 1, nonblank, qsum, qcnt, ssum, hcnt, overlap,
                               bits.data()) == 0);
    CHECK(nonblank[0] == 1 && nonblank[1] == 0);
    CHECK(qcnt[0] == 2 && std::fabs(qsum[0] - (sig(2.0) + sig(1.0))) < 1e-6);
    CHECK(qcnt[1] == 0 && qsum[1] == 0.0);
    CHECK(hcnt[0] == 1 && hcnt[1] == 0);
    CHECK(std::fabs(ssum[0] - (sig(2.0) + 3 * sig(-3.0))) < 1e-6);
    CHECK(bits[0] == 1u && bits[1] == 0u && bits[2] == 0u && bits[3] == (uint64_t{1} << 3));
    CHECK(overlap[0] == 0.0f && overlap[1] == 0.0f);
    // candidates 2, 1: the second one's hard pixel is p = 0 (frame 0, row 0, column 0), where the
    // first one's sample is sigmoid(2): num = sig(2), den = ssum[0] + 1 - num + 1
    const int64_t idx2[2] = {2, 1};
    CHECK(mdqe_pp_filter_masks(m.data(), 2, 2, 4, idx2, 2, 2, 1, nonblank, qsum, qcnt, ssum, hcnt, overlap,
                               nullptr) == 0);
    CHECK(nonblank[0] == 1 && nonblank[1] == 1 && hcnt[1] == 1);
    const double num = sig(2.0);
    CHECK(overlap[0] == 0.0f && std::fabs(overlap[1] - num / (ssum[0] + 1 - num + 1)) < 1e-7);
    CHECK(mdqe_pp_filter_masks(m.data(), 2, 2, 4, idx, 2, 3, 1, nonblank, qsum, qcnt, ssum, hcnt, overlap,
                               nullptr) == MDQE_PP_ERR_BAD_ARGUMENT);   // F > T
}

void test_bits_intersections_accumulate() {
    // maps [N=2, T=1, h=1, w=70]: two words a row
    std::vector<float> a(2 * 70, -1.0f), s(2 * 70, 0.0f);
    a[5] = a[66] = a[69] = 1.0f;              // map 0
    a[70 + 66] = a[70 + 5] = 2.0f;            // map 1
    const int64_t r01[2] = {0, 1}, f0[1] = {0};
    std::vector<uint64_t> bits(2 * 2);
    CHECK(mdqe_pp_positive_bits(a.data(), 1, r01, 2, f0, 1, 1, 70, bits.data()) == 0);
    CHECK(bits[0] == (uint64_t{1} << 5) && bits[1] == ((uint64_t{1} << 2) | (uint64_t{1} << 5)));
    int64_t inter[4], area_a[2], area_b[2];
    CHECK(mdqe_pp_bit_intersections(bits.data(), 1, r01, 2, f0, bits.data(), 1, r01, 2, f0, 1, 2, inter, area_a,
                                    area_b) == 0);
    CHECK(inter[0] == 3 && inter[1] == 2 && inter[2] == 2 && inter[3] == 2 && area_a[0] == 3 && area_b[1] == 2);
    std::vector<uint64_t> sbits(2 * 2, ~uint64_t{0});
    const int64_t rs[1] = {1}, rx[1] = {0};
    CHECK(mdqe_pp_accumulate(s.data(), 1, rs, f0, a.data(), 1, rx, nullptr, 1, 1, 1, 70, sbits.data()) == 0);
    CHECK(s[70 + 5] == 1.0f && s[70 + 0] == -1.0f && s[0] == 0.0f);
    CHECK(sbits[0] == ~uint64_t{0} && sbits[2] == (uint64_t{1} << 5) && sbits[3] == ((uint64_t{1} << 2) | (uint64_t{1} << 5)));
    // again: map 1 += map 1 (2 - 1 = 1 at pixels 5 and 66), then a fresh term overwrites what map 0 held
    const int64_t r1[1] = {1};
    CHECK(mdqe_pp_accumulate(s.data(), 1, rs, f0, a.data(), 1, r1, nullptr, 1, 1, 1, 70, sbits.data()) == 0);
    CHECK(s[70 + 5] == 3.0f && s[70 + 66] == 3.0f && s[70 + 69] == 0.0f && s[70 + 0] == -2.0f);
    CHECK(sbits[2] == (uint64_t{1} << 5) && sbits[3] == (uint64_t{1} << 2));
    s[3] = 7.0f;                                // stale memory of map 0
    const uint8_t fresh[1] = {1};
    const int64_t r0[1] = {0};
    CHECK(mdqe_pp_accumulate(s.data(), 1, r0, f0, a.data(), 1, r1, fresh, 1, 1, 1, 70, sbits.data()) == 0);
    CHECK(s[3] == -1.0f && s[5] == 2.0f && s[66] == 2.0f && s[69] == -1.0f);
    CHECK(sbits[0] == (uint64_t{1} << 5) && sbits[1] == (uint64_t{1} << 2));
}

void test_mask_runs() {
    // identity taps on a 3x2 map: runs of the column-major mask
    const float L[2 * 3 * 2] = {-1, 1,  1, 1,  -1, -1,      // map 0: (0,1) (1,0) (1,1)
                                -1, -1, -1, -1, -1, -1};    // map 1: empty
    const int64_t r[3] = {0, 1, 2}, c[2] = {0, 1};
    const float one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
    uint32_t counts[16];
    int64_t offsets[3];
    CHECK(mdqe_pp_mask_runs(L, 1, r, 0, nullptr, nullptr, 2, 3, 2, r, r, one, zero, 3, c, c, one, zero, 2, counts, 16,
                            offsets) == 0);
    // column-major pixels: x=0: 0 1 0, x=1: 1 1 0 -> runs 1,1,1,2,1
    CHECK(offsets[0] == 0 && offsets[1] == 5 && offsets[2] == 5);
    CHECK(counts[0] == 1 && counts[1] == 1 && counts[2] == 1 && counts[3] == 2 && counts[4] == 1);
    CHECK(mdqe_pp_mask_runs(L, 1, r, 0, nullptr, nullptr, 2, 3, 2, r, r, one, zero, 3, c, c, one, zero, 2, counts, 3,
                            offsets) == MDQE_PP_ERR_CAPACITY);
    // maps taken from sums S [2 tracks, 2 frames, 3, 2] at frame 1, divided by their counts: the
    // smallest subnormal / 1 stays positive, / 2 rounds (to even) to 0, as numpy's division does
    const float tiny = 1.40129846e-45f;
    float S[2 * 2 * 3 * 2] = {0};
    S[(0 * 2 + 1) * 6 + 1] = tiny;      // track 0, frame 1, pixel (0, 1)
    S[(1 * 2 + 1) * 6 + 1] = tiny;      // track 1, frame 1, pixel (0, 1)
    S[(1 * 2 + 1) * 6 + 2] = 4.0f;      // track 1, frame 1, pixel (1, 0)
    const int64_t tracks[2] = {0, 1};
    const int32_t div[2] = {1, 2};
    CHECK(mdqe_pp_mask_runs(S, 2, tracks, 1, div, nullptr, 2, 3, 2, r, r, one, zero, 3, c, c, one, zero, 2, counts, 16,
                            offsets) == 0);
    // track 0: x=0: 0 0 0, x=1: 1 0 0 -> runs 3,1,2; track 1: only (1, 0) -> runs 1,1,4
    CHECK(offsets[1] == 3 && counts[0] == 3 && counts[1] == 1 && counts[2] == 2);
    CHECK(offsets[2] == 6 && counts[3] == 1 && counts[4] == 1 && counts[5] == 4);
    // the same with the bit sets of the sums > 0 bounding the work (words of 2 bits per row)
    const uint64_t sbits[2 * 3] = {2, 0, 0, 2, 1, 0};   // track 0: (0, 1); track 1: (0, 1), (1, 0)
    CHECK(mdqe_pp_mask_runs(S, 2, tracks, 1, div, sbits, 2, 3, 2, r, r, one, zero, 3, c, c, one, zero, 2, counts, 16,
                            offsets) == 0);
    CHECK(offsets[1] == 3 && counts[0] == 3 && counts[1] == 1 && counts[2] == 2);
    CHECK(offsets[2] == 6 && counts[3] == 1 && counts[4] == 1 && counts[5] == 4);
    const int32_t zero_div[2] = {1, 0};
    CHECK(mdqe_pp_mask_runs(S, 2, tracks, 1, zero_div, nullptr, 2, 3, 2, r, r, one, zero, 3, c, c, one, zero, 2, counts, 16,
                            offsets) == MDQE_PP_ERR_BAD_ARGUMENT);
}

}  // namespace

int main() {
    CHECK(mdqe_pp_abi_version() == MDQE_PP_ABI_VERSION);
    test_filter_masks();
    test_bits_intersections_accumulate();
    test_mask_runs();
    return mdqe_test::finish("post-processing kernels: all checks passed");
}
