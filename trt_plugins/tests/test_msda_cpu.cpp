// C++ tests of the CPU kernel against an independent slow reference (double precision, one
// explicit loop per output element). Built and run by ctest; CI runs it under ASan + UBSan.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mdqe_msda/msda_core.h"
#include "mdqe_msda/msda_cpu.h"

#include "check.h"

namespace {

struct Case {
    int64_t N, M, D, Lq, P;
    std::vector<int64_t> shapes;  // H0, W0, H1, W1, ...
    std::vector<float> value, loc, attn;
    int64_t L() const { return static_cast<int64_t>(shapes.size() / 2); }
    int64_t S() const {
        int64_t s = 0;
        for (int64_t l = 0; l < L(); ++l) s += shapes[2 * l] * shapes[2 * l + 1];
        return s;
    }
    std::vector<int64_t> starts() const {
        std::vector<int64_t> st(L());
        int64_t s = 0;
        for (int64_t l = 0; l < L(); ++l) {
            st[l] = s;
            s += shapes[2 * l] * shapes[2 * l + 1];
        }
        return st;
    }
};

// Reference: value at integer pixel (y, x) or 0 outside; bilinear in double.
std::vector<double> reference(const Case& c) {
    const int64_t L = c.L(), S = c.S();
    const auto st = c.starts();
    std::vector<double> out(c.N * c.Lq * c.M * c.D, 0.0);
    for (int64_t n = 0; n < c.N; ++n)
        for (int64_t q = 0; q < c.Lq; ++q)
            for (int64_t m = 0; m < c.M; ++m)
                for (int64_t d = 0; d < c.D; ++d) {
                    double sum = 0.0;
                    for (int64_t l = 0; l < L; ++l) {
                        const int64_t H = c.shapes[2 * l], W = c.shapes[2 * l + 1];
                        auto pix = [&](int64_t y, int64_t x) -> double {
                            if (y < 0 || y >= H || x < 0 || x >= W) return 0.0;
                            return c.value[((n * S + st[l] + y * W + x) * c.M + m) * c.D + d];
                        };
                        for (int64_t p = 0; p < c.P; ++p) {
                            const int64_t li = (((n * c.Lq + q) * c.M + m) * L + l) * c.P + p;
                            const double x = static_cast<double>(c.loc[2 * li]) * W - 0.5;
                            const double y = static_cast<double>(c.loc[2 * li + 1]) * H - 0.5;
                            const double fx0 = std::floor(x), fy0 = std::floor(y);
                            if (fx0 < -2 || fy0 < -2 || fx0 > W + 1 || fy0 > H + 1) continue;  // far outside: 0
                            const int64_t x0 = static_cast<int64_t>(fx0), y0 = static_cast<int64_t>(fy0);
                            const double ax = x - fx0, ay = y - fy0;
                            const double v = (1 - ay) * ((1 - ax) * pix(y0, x0) + ax * pix(y0, x0 + 1)) +
                                             ay * ((1 - ax) * pix(y0 + 1, x0) + ax * pix(y0 + 1, x0 + 1));
                            sum += c.attn[li] * v;
                        }
                    }
                    out[((n * c.Lq + q) * c.M + m) * c.D + d] = sum;
                }
    return out;
}

void fill(Case& c, std::mt19937& rng, const std::vector<float>& special_locs) {
    std::uniform_real_distribution<float> uv(-1.0f, 1.0f), ul(-0.3f, 1.3f), ua(0.0f, 1.0f);
    c.value.resize(c.N * c.S() * c.M * c.D);
    for (auto& v : c.value) v = uv(rng);
    const int64_t n_samples = c.N * c.Lq * c.M * c.L() * c.P;
    c.loc.resize(2 * n_samples);
    std::uniform_int_distribution<size_t> pick(0, special_locs.empty() ? 0 : special_locs.size() - 1);
    for (size_t i = 0; i < c.loc.size(); ++i) {
        c.loc[i] = (!special_locs.empty() && (rng() % 2 == 0)) ? special_locs[pick(rng)] : ul(rng);
    }
    c.attn.resize(n_samples);
    for (auto& a : c.attn) a = ua(rng);
}

double run_and_compare(const Case& c, int threads) {
    std::vector<float> out(c.N * c.Lq * c.M * c.D, -7.0f);
    const auto st = c.starts();
    const int rc = mdqe_msda_cpu_forward(c.value.data(), c.shapes.data(), st.data(), c.loc.data(), c.attn.data(),
                                         c.N, c.S(), c.M, c.D, c.L(), c.Lq, c.P, out.data(), threads);
    CHECK_MSG(rc == MDQE_MSDA_OK, "status %d (%s)", rc, mdqe_msda_last_error());
    const auto ref = reference(c);
    double worst = 0.0;
    for (size_t i = 0; i < out.size(); ++i) worst = std::fmax(worst, std::fabs(out[i] - ref[i]));
    return worst;
}

void test_random_cases() {
    std::mt19937 rng(1234);
    // Border values in normalised coordinates for a map of size 1..6: 0, 1, pixel centres
    // (k + 0.5) / size and pixel edges k / size, plus points just outside.
    std::vector<float> special = {0.0f, 1.0f, -0.5f, 1.5f, -1e-7f, 1.0f + 1e-7f, 0.5f, 0.25f, 0.75f,
                                  1.0f / 6, 5.0f / 6, 1.0f / 3, 2.0f / 3, 0.1f, 0.9f, -2.0f, 3.0f};
    for (int iter = 0; iter < 60; ++iter) {
        Case c;
        c.N = 1 + rng() % 2;
        c.M = 1 + rng() % 3;
        c.D = 1 + rng() % 9;
        c.Lq = 1 + rng() % 7;
        c.P = 1 + rng() % 4;
        const int L = 1 + rng() % 4;
        for (int l = 0; l < L; ++l) {
            c.shapes.push_back(1 + rng() % 6);
            c.shapes.push_back(1 + rng() % 6);
        }
        fill(c, rng, special);
        const double err = run_and_compare(c, static_cast<int>(rng() % 4));
        CHECK_MSG(err <= 1e-5, "random case %d: max abs error %g", iter, err);
    }
}

void test_edge_layouts() {
    std::mt19937 rng(99);
    std::vector<float> special = {0.0f, 1.0f, 0.5f};
    // L=1, P=1, 1x1 level.
    {
        Case c{1, 2, 4, 5, 1, {1, 1}, {}, {}, {}};
        fill(c, rng, special);
        CHECK_MSG(run_and_compare(c, 1) <= 1e-5, "1x1 level, L=1, P=1");
    }
    // TCA layout: one feature level repeated T=4 times as levels.
    {
        Case c{1, 2, 8, 9, 4, {3, 5, 3, 5, 3, 5, 3, 5}, {}, {}, {}};
        fill(c, rng, special);
        CHECK_MSG(run_and_compare(c, 2) <= 1e-5, "TCA layout");
    }
    // Enough rows to use several threads.
    {
        Case c{2, 4, 8, 300, 4, {6, 8, 3, 4, 2, 2, 1, 1}, {}, {}, {}};
        fill(c, rng, special);
        CHECK_MSG(run_and_compare(c, 0) <= 1e-5, "multi-threaded case");
        CHECK_MSG(run_and_compare(c, 3) <= 1e-5, "3 threads");
    }
    // Non-finite and huge locations contribute nothing (no UB in the float->int conversion).
    {
        Case c{1, 1, 2, 1, 4, {2, 2}, {}, {}, {}};
        fill(c, rng, {});
        const float inf = INFINITY;
        c.loc = {NAN, 0.5f, 0.5f, -inf, 1e30f, 0.5f, -1e30f, 1e30f};
        std::vector<float> out(2, -1.0f);
        const int64_t st = 0;
        const int rc = mdqe_msda_cpu_forward(c.value.data(), c.shapes.data(), &st, c.loc.data(), c.attn.data(), 1,
                                             4, 1, 2, 1, 1, 4, out.data(), 1);
        CHECK_MSG(rc == MDQE_MSDA_OK && out[0] == 0.0f && out[1] == 0.0f, "non-finite locations give 0");
    }
    // Empty batch / no queries: nothing to do, OK.
    {
        const int64_t shapes[2] = {2, 2}, st = 0;
        CHECK_MSG(mdqe_msda_cpu_forward(nullptr, shapes, &st, nullptr, nullptr, 0, 4, 1, 2, 1, 3, 1, nullptr, 1) ==
                  MDQE_MSDA_OK,
              "N=0");
    }
}

// Corner computation at the float values closest to the borders (reachable when the compiler
// contracts loc * W - 0.5 into an FMA, as nvcc does): corners stay inside the map and the
// weights of the four corners sum to 1.
void test_corners_at_float_borders() {
    for (int32_t size = 1; size <= 70; ++size) {
        const float s = static_cast<float>(size);
        const float xs[] = {std::nextafter(s, 0.0f), std::nextafter(s - 1.0f, 0.0f), s - 1.0f, std::nextafter(-1.0f, 0.0f),
                            -0.0f, std::nextafter(0.0f, -1.0f), std::nextafter(0.0f, 1.0f), 0.5f * s - 0.5f};
        for (float x : xs) {
            for (float y : xs) {
                mdqe::MsdaCorners c;
                if (!mdqe::msda_corners_at(x, y, size, size, c)) {
                    CHECK_MSG(false, "size %d x %a y %a: no corner", size, x, y);
                    continue;
                }
                float wsum = 0.0f;
                for (int k = 0; k < 4; ++k) {
                    CHECK_MSG(c.offset[k] >= 0 && c.offset[k] < size * size, "size %d x %a y %a: corner %d offset %d",
                          size, x, y, k, c.offset[k]);
                    CHECK_MSG(c.weight[k] >= 0.0f && c.weight[k] <= 1.0f, "weight %g", c.weight[k]);
                    wsum += c.weight[k];
                }
                // Inside [0, size-1]^2 all the weight lands on valid corners.
                if (x >= 0 && y >= 0 && x <= s - 1 && y <= s - 1) CHECK_MSG(std::fabs(wsum - 1.0f) < 1e-5f, "sum %g", wsum);
            }
        }
        mdqe::MsdaCorners c;
        CHECK_MSG(!mdqe::msda_corners_at(s, 0.0f, size, size, c) && !mdqe::msda_corners_at(-1.0f, 0.0f, size, size, c),
              "x = W and x = -1 have no corner inside");
    }
}

void test_invalid_arguments() {
    std::vector<float> value(1 * 6 * 1 * 2, 1.0f), loc(2 * 2, 0.5f), attn(2, 1.0f), out(2);
    const int64_t shapes[4] = {2, 2, 1, 2};
    const int64_t good_start[2] = {0, 4};
    auto call = [&](const int64_t* sh, const int64_t* st, int64_t S, int64_t M, int64_t L) {
        return mdqe_msda_cpu_forward(value.data(), sh, st, loc.data(), attn.data(), 1, S, M, 2, L, 1, 1, out.data(), 1);
    };
    CHECK_MSG(call(shapes, good_start, 6, 1, 2) == MDQE_MSDA_OK, "valid call: %s", mdqe_msda_last_error());
    const int64_t bad_start[2] = {0, 3};
    CHECK_MSG(call(shapes, bad_start, 6, 1, 2) == MDQE_MSDA_ERR_BAD_LEVEL_START, "bad level start");
    CHECK_MSG(std::string(mdqe_msda_last_error()).find("level_start_index[1] = 3") != std::string::npos, "message: %s",
          mdqe_msda_last_error());
    CHECK_MSG(call(shapes, good_start, 7, 1, 2) == MDQE_MSDA_ERR_S_MISMATCH, "S mismatch");
    const int64_t zero_shape[4] = {2, 2, 0, 2};
    CHECK_MSG(call(zero_shape, good_start, 4, 1, 2) == MDQE_MSDA_ERR_BAD_SHAPES, "zero shape");
    CHECK_MSG(call(shapes, good_start, 6, 0, 2) == MDQE_MSDA_ERR_BAD_DIMENSION, "M=0");
    CHECK_MSG(call(shapes, good_start, -1, 1, 2) == MDQE_MSDA_ERR_BAD_DIMENSION, "S<0");
    CHECK_MSG(call(nullptr, good_start, 6, 1, 2) == MDQE_MSDA_ERR_NULL_POINTER, "null shapes");
    CHECK_MSG(mdqe_msda_cpu_forward(value.data(), shapes, good_start, loc.data(), attn.data(), 1, 6, 1, 2, 2, 1, 1,
                                nullptr, 1) == MDQE_MSDA_ERR_NULL_POINTER,
          "null output");
    CHECK_MSG(std::string(mdqe_msda_status_name(MDQE_MSDA_ERR_S_MISMATCH)) == "MDQE_MSDA_ERR_S_MISMATCH", "status name");
    CHECK_MSG(mdqe_msda_default_threads() >= 1, "default threads");
}

}  // namespace

// The documented rule for bad samples (msda_core.h): a non-finite location, or one whose four
// corners are all outside the map, contributes exactly 0 even when its attention weight is NaN or
// inf; the other samples of the same query are unaffected.
void test_bad_samples_contribute_zero() {
    // one level 3x4, one head, D=2, one query, P=4: sample 0 is good, 1..3 are bad
    const int64_t shapes[2] = {3, 4}, st = 0;
    std::vector<float> value(12 * 2);
    for (size_t i = 0; i < value.size(); ++i) value[i] = 0.25f * static_cast<float>(i) - 1.0f;
    const float inf = INFINITY;
    const float loc[8] = {0.4f, 0.6f,        // good
                          NAN, 0.5f,         // non-finite
                          0.5f, -inf,        // non-finite
                          -0.2f, 0.5f};      // finite, x pixel = -0.2*4-0.5 = -1.3: no corner inside
    const float attn_nan[4] = {0.7f, NAN, inf, NAN};
    const float attn_one[4] = {0.7f, 0.0f, 0.0f, 0.0f};
    const float loc_good[8] = {0.4f, 0.6f, 0.4f, 0.6f, 0.4f, 0.6f, 0.4f, 0.6f};
    std::vector<float> out(2, -7.0f), want(2, -7.0f);
    int rc = mdqe_msda_cpu_forward(value.data(), shapes, &st, loc, attn_nan, 1, 12, 1, 2, 1, 1, 4, out.data(), 1);
    // the same query with only the good sample weighted
    int rc2 = mdqe_msda_cpu_forward(value.data(), shapes, &st, loc_good, attn_one, 1, 12, 1, 2, 1, 1, 4, want.data(), 1);
    CHECK_MSG(rc == MDQE_MSDA_OK && rc2 == MDQE_MSDA_OK, "bad samples are not an error");
    CHECK_MSG(std::isfinite(out[0]) && std::isfinite(out[1]), "NaN/inf weights of bad samples do not leak");
    CHECK_MSG(out[0] == want[0] && out[1] == want[1], "bad samples contribute exactly 0, the good one is kept");
}

int main() {
    test_bad_samples_contribute_zero();
    test_random_cases();
    test_edge_layouts();
    test_corners_at_float_borders();
    test_invalid_arguments();
    return mdqe_test::finish("all CPU kernel checks passed");
}
