// Decode-step CPU kernels for bf16 models (AVX512-BF16):
//  * linear: y[M, N] = x[M, K] @ W[N, K]^T (+ bias) for up to 4 input rows of decode. Each
//    weight row is streamed from memory once and multiplied with every input row in registers
//    (bf16 dot products, float32 accumulation); the weight keeps its row-major layout.
//  * rms_norm: y = w * x / rms(x) over the last dim, float32 math, one pass per row.
// Built only where the compiler targets AVX512-BF16; callers check ``max_rows()``.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512BF16__)
constexpr int64_t kMaxRows = 4;

static inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

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
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && w.scalar_type() == at::kBFloat16);
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1));
  TORCH_CHECK(x.size(0) <= kMaxRows && x.size(1) % 32 == 0, "unsupported shape");
  x = x.contiguous();
  TORCH_CHECK(w.is_contiguous());
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x.options());
  const uint16_t* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(w.data_ptr());
  const uint16_t* bp = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kBFloat16 && bias->is_contiguous());
    bp = reinterpret_cast<const uint16_t*>(bias->data_ptr());
  }
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
      const uint16_t* xr = xp + r * D;
      __m512 ss = _mm512_setzero_ps();
      for (int64_t d = 0; d < D; d += 16) {
        __m512 v = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(xr + d))), 16));
        ss = _mm512_fmadd_ps(v, v, ss);
      }
      const float scale = 1.0f / std::sqrt(_mm512_reduce_add_ps(ss) / D + feps);
      for (int64_t d = 0; d < D; ++d) {
        // as the reference: normalise in float32, round to bf16, then multiply by the weight
        float normed = bf16_to_float(c10::BFloat16(bf16_to_float(xr[d]) * scale).x);
        yp[r * D + d] = c10::BFloat16(normed * bf16_to_float(wp[d])).x;
      }
    }
  });
  return y;
}

int64_t max_rows() { return kMaxRows; }
#else
torch::Tensor linear(torch::Tensor x, torch::Tensor, c10::optional<torch::Tensor>) {
  TORCH_CHECK(false, "built without AVX512-BF16");
  return x;
}
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor, double) {
  TORCH_CHECK(false, "built without AVX512-BF16");
  return x;
}
int64_t max_rows() { return 0; }
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &linear);
  m.def("rms_norm", &rms_norm);
  m.def("max_rows", &max_rows);
}
