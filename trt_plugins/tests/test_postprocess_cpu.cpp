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

void test_scan_and_soft_iou() {
    // masks [Q=3, T=2, h=2, w=4]; candidates 2, 0 (query 1 never read); F = 2, every frame sampled
    std::vector<float> m(3 * 2 * 2 * 4, -3.0f);
    auto at = [&](int q, int t, int y, int x) -> float& { return m[((q * 2 + t) * 2 + y) * 4 + x]; };
    at(2, 0, 0, 0) = 2.0f;   // sampled (row 0, column 0)
    at(2, 1, 1, 3) = 1.0f;   // not sampled (row 1)
    at(1, 0, 0, 0) = 9.0f;   // not a candidate
    const int64_t idx[2] = {2, 0};
    const int64_t P = 2 * 1 * 2;   // nf * (h/2) * (w/2)
    std::vector<float> soft(2 * P);
    uint8_t nonblank[2];
    double qsum[2], ssum[2];
    int64_t qcnt[2], hcnt[2];
    std::vector<uint64_t> bits(2 * 2 * 2);   // [K, F, h * 1 word]
    std::vector<int32_t> hard(2 * P);
    CHECK(mdqe_pp_scan_candidates(m.data(), 2, 2, 4, idx, 2, 2, 1, soft.data(), nonblank, qsum, qcnt, ssum, hcnt,
                                  hard.data(), bits.data()) == 0);
    CHECK(nonblank[0] == 1 && nonblank[1] == 0);
    CHECK(qcnt[0] == 2 && std::fabs(qsum[0] - (sig(2.0) + sig(1.0))) < 1e-6);
    CHECK(qcnt[1] == 0 && qsum[1] == 0.0);
    CHECK(std::fabs(soft[0] - sig(2.0)) < 1e-6 && std::fabs(soft[1] - sig(-3.0)) < 1e-7);
    CHECK(hcnt[0] == 1 && hcnt[1] == 0 && hard[0] == 0);
    CHECK(std::fabs(ssum[0] - (sig(2.0) + 3 * sig(-3.0))) < 1e-6);
    CHECK(bits[0] == 1u && bits[1] == 0u && bits[2] == 0u && bits[3] == (uint64_t{1} << 3));
    // soft IoU of row 0 (rank 0) then row 1: num = soft[1, p] where soft[0, p] > 0.5 ... reversed here:
    // rows {1, 0}: j = 1 is row 0 with hard pixel p = 0; num = soft[1, 0]
    const int64_t rows[2] = {1, 0};
    float out[2];
    CHECK(mdqe_pp_soft_iou_max(soft.data(), 2, P, rows, 2, ssum, hcnt, hard.data(), out) == 0);
    const double num = sig(-3.0);
    CHECK(out[0] == 0.0f && std::fabs(out[1] - num / (ssum[1] + 1 - num + 1)) < 1e-7);
    CHECK(mdqe_pp_scan_candidates(m.data(), 2, 2, 4, idx, 2, 3, 1, soft.data(), nonblank, qsum, qcnt, ssum, hcnt,
                                  hard.data(), nullptr) == MDQE_PP_ERR_BAD_ARGUMENT);   // F > T
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
    CHECK(mdqe_pp_accumulate(s.data(), 1, rs, f0, a.data(), 1, rx, 1, 1, 1, 70, sbits.data()) == 0);
    CHECK(s[70 + 5] == 1.0f && s[70 + 0] == -1.0f && s[0] == 0.0f);
    CHECK(sbits[0] == ~uint64_t{0} && sbits[2] == (uint64_t{1} << 5) && sbits[3] == ((uint64_t{1} << 2) | (uint64_t{1} << 5)));
}

void test_mask_runs() {
    // identity taps on a 3x2 map: runs of the column-major mask
    const float L[2 * 3 * 2] = {-1, 1,  1, 1,  -1, -1,      // map 0: (0,1) (1,0) (1,1)
                                -1, -1, -1, -1, -1, -1};    // map 1: empty
    const int64_t r[3] = {0, 1, 2}, c[2] = {0, 1};
    const float one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
    uint32_t counts[16];
    int64_t offsets[3];
    CHECK(mdqe_pp_mask_runs(L, 2, 3, 2, r, r, one, zero, 3, c, c, one, zero, 2, counts, 16, offsets) == 0);
    // column-major pixels: x=0: 0 1 0, x=1: 1 1 0 -> runs 1,1,1,2,1
    CHECK(offsets[0] == 0 && offsets[1] == 5 && offsets[2] == 5);
    CHECK(counts[0] == 1 && counts[1] == 1 && counts[2] == 1 && counts[3] == 2 && counts[4] == 1);
    CHECK(mdqe_pp_mask_runs(L, 2, 3, 2, r, r, one, zero, 3, c, c, one, zero, 2, counts, 3, offsets) ==
          MDQE_PP_ERR_CAPACITY);
}

}  // namespace

int main() {
    CHECK(mdqe_pp_abi_version() == MDQE_PP_ABI_VERSION);
    test_scan_and_soft_iou();
    test_bits_intersections_accumulate();
    test_mask_runs();
    return mdqe_test::finish("post-processing kernels: all checks passed");
}
