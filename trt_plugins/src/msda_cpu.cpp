// MSDeformAttn CPU kernel: fp32, multi-threaded over queries with std::thread (no OpenMP, so
// it does not interact with the libgomp that torch may have loaded into the process).
#include "mdqe_msda/msda_cpu.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

#include "mdqe_msda/msda_core.h"

namespace {

thread_local std::string g_last_error;

int fail(int status, const std::string& message) {
    g_last_error = message;
    return status;
}

struct Problem {
    const float* value;
    const float* loc;
    const float* attn;
    float* out;
    int64_t N, S, M, D, L, Lq, P;
    std::vector<int32_t> H, W;
    std::vector<int64_t> start;
};

// Rows are (n, q) pairs; a row produces output[n, q, :] (all M heads). For each head the corners
// of up to kBatch samples are set up and their channel rows prefetched first, then accumulated,
// so that many gathers are in flight at once.
constexpr int64_t kBatch = 32;  // samples set up before accumulating

// On x86-64 the loop is also compiled for AVX2+FMA and picked at load time (the library stays
// runnable on any x86-64 CPU). Other architectures use their baseline (NEON on aarch64).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define MDQE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MDQE_CPU_CLONES
#endif

MDQE_CPU_CLONES void run_rows(const Problem& p, int64_t row_begin, int64_t row_end) {
    const int64_t MD = p.M * p.D;
    const int64_t LP = p.L * p.P;
    const int32_t D = static_cast<int32_t>(p.D);
    mdqe::MsdaCorners corners[kBatch];
    const float* levels[kBatch];
    float weights[kBatch];
    for (int64_t row = row_begin; row < row_end; ++row) {
        const int64_t n = row / p.Lq;
        const float* loc = p.loc + row * p.M * LP * 2;
        const float* attn = p.attn + row * p.M * LP;
        float* out = p.out + row * MD;
        std::fill(out, out + MD, 0.0f);
        const float* value_n = p.value + n * p.S * MD;
        for (int64_t m = 0; m < p.M; ++m) {
            float* acc = out + m * p.D;
            const float* value_nm = value_n + m * p.D;
            int64_t l = 0, s = 0;
            for (int64_t done = 0; done < LP;) {
                // Phase 1: set up to kBatch samples, prefetching the corners' channel rows.
                int64_t count = 0;
                for (; done < LP && count < kBatch; ++done, loc += 2, ++attn) {
                    const float* level = value_nm + p.start[l] * MD;
                    if (mdqe::msda_bilinear_setup(loc[0], loc[1], p.H[l], p.W[l], corners[count])) {
                        for (int k = 0; k < 4; ++k) {
                            const float* row_ptr = level + static_cast<int64_t>(corners[count].offset[k]) * MD;
                            __builtin_prefetch(row_ptr);
                            __builtin_prefetch(row_ptr + D - 1);
                        }
                        levels[count] = level;
                        weights[count] = *attn;
                        ++count;
                    }
                    if (++s == p.P) {
                        s = 0;
                        ++l;
                    }
                }
                // Phase 2: accumulate.
                for (int64_t i = 0; i < count; ++i) {
                    mdqe::msda_accumulate(levels[i], MD, corners[i], weights[i], acc, D);
                }
            }
        }
    }
}

int validate(const float* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
             const float* loc, const float* attn, float* out, Problem& p) {
    const int64_t dims[7] = {p.N, p.S, p.M, p.D, p.L, p.Lq, p.P};
    const char* names[7] = {"N", "S", "M", "D", "L", "Lq", "P"};
    for (int i = 0; i < 7; ++i) {
        if (dims[i] < 0) return fail(MDQE_MSDA_ERR_BAD_DIMENSION, std::string(names[i]) + " is negative");
    }
    for (int i : {2, 3, 4, 6}) {
        if (dims[i] < 1) return fail(MDQE_MSDA_ERR_BAD_DIMENSION, std::string(names[i]) + " must be >= 1, got 0");
    }
    if (!spatial_shapes) return fail(MDQE_MSDA_ERR_NULL_POINTER, "spatial_shapes is NULL");
    if (!level_start_index) return fail(MDQE_MSDA_ERR_NULL_POINTER, "level_start_index is NULL");
    const int64_t big = int64_t(1) << 40;  // keeps every product below 2^63
    for (int i = 0; i < 7; ++i) {
        if (dims[i] > big) return fail(MDQE_MSDA_ERR_BAD_DIMENSION, std::string(names[i]) + " is too large");
    }
    if (p.N * p.Lq > big / (p.M * p.L * p.P * 2) || p.N * p.S > big / (p.M * p.D) || p.N * p.Lq > big / (p.M * p.D)) {
        return fail(MDQE_MSDA_ERR_BAD_DIMENSION, "tensor sizes exceed 2^40 elements");
    }
    p.H.resize(p.L);
    p.W.resize(p.L);
    p.start.resize(p.L);
    int64_t total = 0;
    for (int64_t l = 0; l < p.L; ++l) {
        const int64_t h = spatial_shapes[2 * l], w = spatial_shapes[2 * l + 1];
        if (h < 1 || w < 1 || h > std::numeric_limits<int32_t>::max() / w) {
            return fail(MDQE_MSDA_ERR_BAD_SHAPES, "spatial_shapes[" + std::to_string(l) + "] = (" + std::to_string(h) +
                                                      ", " + std::to_string(w) +
                                                      ") must be positive with H*W < 2^31");
        }
        if (level_start_index[l] != total) {
            return fail(MDQE_MSDA_ERR_BAD_LEVEL_START,
                        "level_start_index[" + std::to_string(l) + "] = " + std::to_string(level_start_index[l]) +
                            " but the levels before it hold " + std::to_string(total) +
                            " pixels (expected the running sum of H*W)");
        }
        p.H[l] = static_cast<int32_t>(h);
        p.W[l] = static_cast<int32_t>(w);
        p.start[l] = total;
        total += h * w;
        if (total > big) return fail(MDQE_MSDA_ERR_BAD_SHAPES, "spatial_shapes sum to more than 2^40 pixels");
    }
    if (total != p.S) {
        return fail(MDQE_MSDA_ERR_S_MISMATCH, "value has S = " + std::to_string(p.S) + " pixels but spatial_shapes sum to " +
                                                  std::to_string(total));
    }
    const bool empty_out = p.N == 0 || p.Lq == 0;
    if (!empty_out) {
        if (!value && p.S > 0) return fail(MDQE_MSDA_ERR_NULL_POINTER, "value is NULL");
        if (!loc) return fail(MDQE_MSDA_ERR_NULL_POINTER, "sampling_locations is NULL");
        if (!attn) return fail(MDQE_MSDA_ERR_NULL_POINTER, "attention_weights is NULL");
        if (!out) return fail(MDQE_MSDA_ERR_NULL_POINTER, "output is NULL");
    }
    p.value = value;
    p.loc = loc;
    p.attn = attn;
    p.out = out;
    return MDQE_MSDA_OK;
}

}  // namespace

extern "C" {

int mdqe_msda_abi_version(void) { return MDQE_MSDA_ABI_VERSION; }

const char* mdqe_msda_last_error(void) { return g_last_error.c_str(); }

const char* mdqe_msda_status_name(int status) {
    switch (status) {
        case MDQE_MSDA_OK: return "MDQE_MSDA_OK";
        case MDQE_MSDA_ERR_NULL_POINTER: return "MDQE_MSDA_ERR_NULL_POINTER";
        case MDQE_MSDA_ERR_BAD_DIMENSION: return "MDQE_MSDA_ERR_BAD_DIMENSION";
        case MDQE_MSDA_ERR_BAD_SHAPES: return "MDQE_MSDA_ERR_BAD_SHAPES";
        case MDQE_MSDA_ERR_BAD_LEVEL_START: return "MDQE_MSDA_ERR_BAD_LEVEL_START";
        case MDQE_MSDA_ERR_S_MISMATCH: return "MDQE_MSDA_ERR_S_MISMATCH";
        default: return "MDQE_MSDA_UNKNOWN_STATUS";
    }
}

int32_t mdqe_msda_default_threads(void) {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    const unsigned hc = std::thread::hardware_concurrency();
    return hc > 0 ? static_cast<int32_t>(hc) : 1;
}

int mdqe_msda_cpu_forward(const float* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
                          const float* sampling_locations, const float* attention_weights, int64_t N, int64_t S,
                          int64_t M, int64_t D, int64_t L, int64_t Lq, int64_t P, float* output,
                          int32_t num_threads) {
    g_last_error.clear();
    Problem p;
    p.N = N; p.S = S; p.M = M; p.D = D; p.L = L; p.Lq = Lq; p.P = P;
    const int status = validate(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                output, p);
    if (status != MDQE_MSDA_OK) return status;
    const int64_t rows = N * Lq;
    if (rows == 0) return MDQE_MSDA_OK;

    // Work split: chunks of rows handed out through an atomic counter (load balance: rows whose
    // samples fall outside the maps are cheaper). Small problems run on the calling thread.
    const int64_t samples_per_row = M * L * P;
    const int64_t min_samples_per_thread = 8192;
    int64_t threads = num_threads > 0 ? num_threads : mdqe_msda_default_threads();
    threads = std::min<int64_t>(threads, std::max<int64_t>(1, rows * samples_per_row / min_samples_per_thread));
    threads = std::max<int64_t>(1, std::min<int64_t>(threads, rows));
    if (threads == 1) {
        run_rows(p, 0, rows);
        return MDQE_MSDA_OK;
    }
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(64, rows / (threads * 8)));
    std::atomic<int64_t> next{0};
    auto worker = [&]() {
        for (;;) {
            const int64_t begin = next.fetch_add(chunk);
            if (begin >= rows) return;
            run_rows(p, begin, std::min(rows, begin + chunk));
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(threads - 1));
    for (int64_t t = 1; t < threads; ++t) {
        try {
            pool.emplace_back(worker);
        } catch (const std::system_error&) {
            break;  // fewer workers: the calling thread and the started ones finish the work
        }
    }
    worker();
    for (auto& th : pool) th.join();
    return MDQE_MSDA_OK;
}

}  // extern "C"
