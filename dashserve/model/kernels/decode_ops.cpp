// Decode-step CPU kernels for bf16 models, compiled for the machine's own vector ISA:
//  * linear: y[M, N] = x[M, K] @ W[N, K]^T (+ bias) for the few input rows of decode. The
//    weight keeps its row-major layout and each weight row is streamed from memory once per
//    group of input rows, float32 accumulation.
//      - AVX512-BF16: bf16 dot products in hardware, up to 4 rows (oneDNN is faster beyond).
//      - AVX2 + FMA (no bf16 math, e.g. AMD Zen 3): weights widened to float32 in registers,
//        up to kMaxRows rows a call (the caller chunks larger decode batches, and widens the
//        weight once for float32 BLAS at prompt-sized ones).
//  * rms_norm: y = w * x / rms(x) over the last dim, float32 math, one pass per row (portable).
//  * qk_norm_rope: Qwen3's q/k head norms and the rotary embedding, in place (portable).
// Built with -ffp-contract=off so that float math rounds exactly as torch's separate ops do.
// ``max_rows()`` is 0 where neither ISA is available; ``k_multiple()`` is what K must divide.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <cstring>

static inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

static inline uint16_t float_to_bf16(float f) { return c10::BFloat16(f).x; }

static void check_linear(const torch::Tensor& x, const torch::Tensor& w, int64_t k_multiple) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && w.scalar_type() == at::kBFloat16);
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1));
  TORCH_CHECK(x.size(1) % k_multiple == 0, "unsupported shape: K must be a multiple of ",
              k_multiple);
  TORCH_CHECK(w.is_contiguous());
}

static const uint16_t* bias_ptr(const c10::optional<torch::Tensor>& bias, int64_t N) {
  if (!bias.has_value() || !bias->defined()) return nullptr;
  TORCH_CHECK(bias->scalar_type() == at::kBFloat16 && bias->is_contiguous() && bias->numel() == N);
  return reinterpret_cast<const uint16_t*>(bias->data_ptr());
}

#if defined(__AVX512BF16__)
constexpr int64_t kMaxRows = 4;
constexpr int64_t kMultiple = 32;

template <int M>
static void rows_kernel(const uint16_t* x, const uint16_t* w, const uint16_t* bias, uint16_t* y,
                        int64_t K, int64_t N, int64_t n0, int64_t n1) {
  constexpr int64_t R = 2;  // weight rows per iteration
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    __m512 acc[R][M];
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
    const uint16_t* w0 = w + n * K;
    for (int64_t k = 0; k < K; k += 32) {
      __m512bh wv[R];
      for (int r = 0; r < R; ++r)
        wv[r] = (__m512bh)_mm512_loadu_si512((const void*)(w0 + r * K + k));
      for (int m = 0; m < M; ++m) {
        __m512bh xv = (__m512bh)_mm512_loadu_si512((const void*)(x + m * K + k));
        for (int r = 0; r < R; ++r) acc[r][m] = _mm512_dpbf16_ps(acc[r][m], xv, wv[r]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < M; ++m) {
        float v = _mm512_reduce_add_ps(acc[r][m]);
        if (bias) v += c10::BFloat16(bias[n + r], c10::BFloat16::from_bits());
        y[m * N + n + r] = c10::BFloat16(v).x;
      }
  }
  for (; n < n1; ++n) {
    const uint16_t* wr = w + n * K;
    for (int m = 0; m < M; ++m) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t k = 0; k < K; k += 32)
        acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512((const void*)(x + m * K + k)),
                               (__m512bh)_mm512_loadu_si512((const void*)(wr + k)));
      float v = _mm512_reduce_add_ps(acc);
      if (bias) v += c10::BFloat16(bias[n], c10::BFloat16::from_bits());
      y[m * N + n] = c10::BFloat16(v).x;
    }
  }
}

torch::Tensor linear(torch::Tensor x, torch::Tensor w, c10::optional<torch::Tensor> bias) {
  check_linear(x, w, kMultiple);
  TORCH_CHECK(x.size(0) <= kMaxRows, "unsupported shape: at most ", kMaxRows, " rows");
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x.options());
  const uint16_t* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(w.data_ptr());
  const uint16_t* bp = bias_ptr(bias, N);
  uint16_t* yp = reinterpret_cast<uint16_t*>(y.data_ptr());
  at::parallel_for(0, N, 256, [&](int64_t n0, int64_t n1) {
    switch (M) {
      case 1: rows_kernel<1>(xp, wp, bp, yp, K, N, n0, n1); break;
      case 2: rows_kernel<2>(xp, wp, bp, yp, K, N, n0, n1); break;
      case 3: rows_kernel<3>(xp, wp, bp, yp, K, N, n0, n1); break;
      default: rows_kernel<4>(xp, wp, bp, yp, K, N, n0, n1); break;
    }
  });
  return y;
}

#elif defined(__AVX2__) && defined(__FMA__)
constexpr int64_t kMaxRows = 16;
constexpr int64_t kMultiple = 16;

#include "avx2_bf16.h"

// Few input rows are bound by memory: a thread then reads its weight rows as one sequential
// stream, prefetched ahead, 16 columns a step in two accumulator chains (measured on Zen 3:
// 30-33 GB/s against 22 GB/s for four interleaved row streams).
constexpr int kPrefetchBytes = 2048;

template <int MR>
static inline void stream_tile(const float* x, const uint16_t* w, int64_t K, float* out) {
  __m256 acc[MR][2];
  for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(w + k) + kPrefetchBytes, _MM_HINT_T0);
    const __m256 w0 = load_bf16x8(w + k), w1 = load_bf16x8(w + k + 8);
    for (int m = 0; m < MR; ++m) {
      acc[m][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * K + k), w0, acc[m][0]);
      acc[m][1] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * K + k + 8), w1, acc[m][1]);
    }
  }
  for (int m = 0; m < MR; ++m) out[m] = hsum(_mm256_add_ps(acc[m][0], acc[m][1]));
}

// Eight input rows and more are bound by arithmetic: 4 x 2 (input x weight rows) accumulators
// load fewer operands per multiply-add (measured at M = 16: 115-145 GFLOP/s on 2 Zen 3 cores,
// against 85-120 for the streaming tile).
template <int MR, int R>
static inline void compute_tile(const float* x, const uint16_t* w, int64_t K, float* out) {
  __m256 acc[MR][R];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 8) {
    __m256 wv[R];
    if ((k & 31) == 0)  // one prefetch per 64-byte line; a hit once the first group read it
      for (int r = 0; r < R; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(w + r * K + k) + kPrefetchBytes, _MM_HINT_T0);
    for (int r = 0; r < R; ++r) wv[r] = load_bf16x8(w + r * K + k);
    for (int m = 0; m < MR; ++m) {
      const __m256 xv = _mm256_loadu_ps(x + m * K + k);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm256_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < R; ++r) out[m * R + r] = hsum(acc[m][r]);
}

template <int MR, int R>
static inline void tile(const float* x, const uint16_t* w, int64_t K, float* out) {
  if constexpr (R == 1) {
    stream_tile<MR>(x, w, K, out);
  } else {
    compute_tile<MR, R>(x, w, K, out);
  }
}

// Weight rows [n0, n1) for input rows [m0, m0 + MR): R rows at a time, then one by one.
template <int MR, int R>
static void rows_group(const float* xf, const uint16_t* w, const uint16_t* bias, uint16_t* y,
                       int64_t m0, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  float out[MR * R];
  int64_t n = n0;
  auto store = [&](int64_t first, int rows) {
    for (int m = 0; m < MR; ++m)
      for (int r = 0; r < rows; ++r) {
        float v = out[m * rows + r];
        if (bias) v += bf16_to_float(bias[first + r]);
        y[(m0 + m) * N + first + r] = float_to_bf16(v);
      }
  };
  for (; n + R <= n1; n += R) {
    tile<MR, R>(xf + m0 * K, w + n * K, K, out);
    store(n, R);
  }
  for (; n < n1; ++n) {
    tile<MR, 1>(xf + m0 * K, w + n * K, K, out);
    store(n, 1);
  }
}

torch::Tensor linear(torch::Tensor x, torch::Tensor w, c10::optional<torch::Tensor> bias) {
  check_linear(x, w, kMultiple);
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  TORCH_CHECK(M <= kMaxRows, "unsupported shape: at most ", kMaxRows, " rows");
  auto xf = x.to(at::kFloat).contiguous();
  auto y = torch::empty({M, N}, x.options());
  const float* xp = xf.data_ptr<float>();
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(w.data_ptr());
  const uint16_t* bp = bias_ptr(bias, N);
  uint16_t* yp = reinterpret_cast<uint16_t*>(y.data_ptr());
  // Weight rows in blocks small enough to stay in L1/L2 while every group of input rows
  // passes over them: memory reads each weight byte once whatever M is.
  const int64_t block = std::max<int64_t>(8, (16 * 1024) / (2 * K) / 4 * 4);
  at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t b0 = n0; b0 < n1; b0 += block) {
      const int64_t b1 = std::min(n1, b0 + block);
      int64_t m0 = 0;
      if (M >= 8) {
        for (; m0 + 4 <= M; m0 += 4) rows_group<4, 2>(xp, wp, bp, yp, m0, K, N, b0, b1);
      } else {
        for (; m0 + 4 <= M; m0 += 4) rows_group<4, 1>(xp, wp, bp, yp, m0, K, N, b0, b1);
      }
      switch (M - m0) {
        case 1: rows_group<1, 1>(xp, wp, bp, yp, m0, K, N, b0, b1); break;
        case 2: rows_group<2, 1>(xp, wp, bp, yp, m0, K, N, b0, b1); break;
        case 3: rows_group<3, 1>(xp, wp, bp, yp, m0, K, N, b0, b1); break;
        default: break;
      }
    }
  });
  return y;
}

#else
constexpr int64_t kMaxRows = 0;
constexpr int64_t kMultiple = 1;
torch::Tensor linear(torch::Tensor x, torch::Tensor, c10::optional<torch::Tensor>) {
  TORCH_CHECK(false, "built without AVX512-BF16 or AVX2");
  return x;
}
#endif

// RMSNorm of one row as the reference computes it: normalise in float32, round to bf16, then
// multiply by the weight and round again; ``emit(d, bf16 bits)`` takes each result.
template <typename Emit>
static inline void rms_norm_row(const uint16_t* x, const uint16_t* w, int64_t D, float eps,
                                Emit emit) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int64_t d = 0; d < D; ++d) {
    const float v = bf16_to_float(x[d]);
    ss += v * v;
  }
  const float scale = 1.0f / std::sqrt(ss / D + eps);
  for (int64_t d = 0; d < D; ++d) {
    const float normed = bf16_to_float(float_to_bf16(bf16_to_float(x[d]) * scale));
    emit(d, float_to_bf16(normed * bf16_to_float(w[d])));
  }
}

torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && weight.scalar_type() == at::kBFloat16);
  const int64_t D = x.size(-1);
  TORCH_CHECK(weight.numel() == D && D % 16 == 0 && weight.is_contiguous());
  x = x.contiguous();
  auto y = torch::empty_like(x);
  const int64_t rows = x.numel() / D;
  const uint16_t* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(weight.data_ptr());
  uint16_t* yp = reinterpret_cast<uint16_t*>(y.data_ptr());
  const float feps = static_cast<float>(eps);
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      uint16_t* yr = yp + r * D;
      rms_norm_row(xp + r * D, wp, D, feps, [&](int64_t d, uint16_t v) { yr[d] = v; });
    }
  });
  return y;
}

// One head row in place: optional RMSNorm (numerics as rms_norm), then the neox rotation.
static void norm_rope_row(uint16_t* x, const uint16_t* w, const float* c, const float* s,
                          int64_t D, float eps, float* buf) {
  const int64_t half = D / 2;
  if (w != nullptr) {
    rms_norm_row(x, w, D, eps, [&](int64_t d, uint16_t v) { buf[d] = bf16_to_float(v); });
  } else {
    for (int64_t d = 0; d < D; ++d) buf[d] = bf16_to_float(x[d]);
  }
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = buf[i], x2 = buf[i + half];
    x[i] = float_to_bf16(x1 * c[i] - x2 * s[i]);
    x[i + half] = float_to_bf16(x2 * c[i] + x1 * s[i]);
  }
}

// In place on q [T, H, D] and k [T, KVH, D] (bf16, contiguous): Qwen3's per-head q/k RMSNorm
// when weights are given, then the neox rotary embedding at each token's position (cos, sin:
// [positions, D / 2] float32). One call replaces some thirty small torch ops per layer.
void qk_norm_rope(torch::Tensor q, torch::Tensor k, c10::optional<torch::Tensor> q_weight,
                  c10::optional<torch::Tensor> k_weight, torch::Tensor cos, torch::Tensor sin,
                  torch::Tensor positions, double eps) {
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16);
  TORCH_CHECK(q.is_contiguous() && k.is_contiguous() && q.dim() == 3 && k.dim() == 3);
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat);
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous());
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.is_contiguous());
  const int64_t T = q.size(0), H = q.size(1), KVH = k.size(1), D = q.size(2);
  TORCH_CHECK(k.size(0) == T && k.size(2) == D && positions.numel() == T);
  TORCH_CHECK(D % 2 == 0 && D <= 1024, "head dim must be even and at most 1024");
  TORCH_CHECK(cos.size(1) == D / 2 && sin.sizes() == cos.sizes());
  auto weight = [&](const c10::optional<torch::Tensor>& w) -> const uint16_t* {
    if (!w.has_value() || !w->defined()) return nullptr;
    TORCH_CHECK(w->scalar_type() == at::kBFloat16 && w->is_contiguous() && w->numel() == D);
    return reinterpret_cast<const uint16_t*>(w->data_ptr());
  };
  const uint16_t* qw = weight(q_weight);
  const uint16_t* kw = weight(k_weight);
  uint16_t* qp = reinterpret_cast<uint16_t*>(q.data_ptr());
  uint16_t* kp = reinterpret_cast<uint16_t*>(k.data_ptr());
  const int64_t* pos = positions.data_ptr<int64_t>();
  const int64_t P = cos.size(0);
  for (int64_t t = 0; t < T; ++t) TORCH_CHECK(pos[t] >= 0 && pos[t] < P, "position out of range");
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  const float feps = static_cast<float>(eps);
  const int64_t rows = T * (H + KVH);
  at::parallel_for(0, rows, 512, [&](int64_t r0, int64_t r1) {
    float buf[1024];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t t = r / (H + KVH), h = r % (H + KVH);
      const float* c = cp + pos[t] * (D / 2);
      const float* s = sp + pos[t] * (D / 2);
      if (h < H)
        norm_rope_row(qp + (t * H + h) * D, qw, c, s, D, feps, buf);
      else
        norm_rope_row(kp + (t * KVH + h - H) * D, kw, c, s, D, feps, buf);
    }
  });
}

int64_t max_rows() { return kMaxRows; }
int64_t k_multiple() { return kMultiple; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &linear);
  m.def("rms_norm", &rms_norm);
  m.def("qk_norm_rope", &qk_norm_rope);
  m.def("max_rows", &max_rows);
  m.def("k_multiple", &k_multiple);
}
