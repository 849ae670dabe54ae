// Decode attention straight from the paged KV cache on CPU: no gather copy.
// One task per (sequence, kv head): the task reads each K and V row of its context once and
// serves all query heads of its group, accumulating in float32.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

template <typename T>
static void decode_kernel(
    const T* q, const T* k_cache, const T* v_cache, const int64_t* slots, const int64_t* lens,
    T* out, int64_t B, int64_t H, int64_t KVH, int64_t D, int64_t S, int64_t L, float scale) {
  const int64_t G = H / KVH;
  at::parallel_for(0, B * KVH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf(G * D), acc(G * D), scores(G * L);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / KVH, h = task % KVH, len = lens[b];
      const T* kc = k_cache + h * S * D;
      const T* vc = v_cache + h * S * D;
      for (int64_t g = 0; g < G; ++g)
        for (int64_t d = 0; d < D; ++d)
          qf[g * D + d] = static_cast<float>(q[(b * H + h * G + g) * D + d]) * scale;
      std::vector<float> maxs(G, -INFINITY);
      for (int64_t t = 0; t < len; ++t) {
        const T* kr = kc + slots[b * L + t] * D;
        for (int64_t g = 0; g < G; ++g) {
          float s = 0.f;
          const float* qg = qf.data() + g * D;
#pragma omp simd reduction(+ : s)
          for (int64_t d = 0; d < D; ++d) s += qg[d] * static_cast<float>(kr[d]);
          scores[g * L + t] = s;
          if (s > maxs[g]) maxs[g] = s;
        }
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      std::vector<float> sums(G, 0.f);
      for (int64_t g = 0; g < G; ++g)
        for (int64_t t = 0; t < len; ++t) {
          float p = std::exp(scores[g * L + t] - maxs[g]);
          scores[g * L + t] = p;
          sums[g] += p;
        }
      for (int64_t t = 0; t < len; ++t) {
        const T* vr = vc + slots[b * L + t] * D;
        for (int64_t g = 0; g < G; ++g) {
          const float p = scores[g * L + t];
          float* ag = acc.data() + g * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) ag[d] += p * static_cast<float>(vr[d]);
        }
      }
      for (int64_t g = 0; g < G; ++g)
        for (int64_t d = 0; d < D; ++d)
          out[(b * H + h * G + g) * D + d] = static_cast<T>(acc[g * D + d] / sums[g]);
    }
  });
}

// q: [B, H, D]; k_cache, v_cache: [KVH, S, D]; slots: [B, L] int64; lens: [B] int64.
torch::Tensor paged_decode(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
                           torch::Tensor slots, torch::Tensor lens, double scale) {
  TORCH_CHECK(q.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous());
  TORCH_CHECK(slots.is_contiguous() && lens.is_contiguous());
  auto out = torch::empty_like(q);
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t KVH = k_cache.size(0), S = k_cache.size(1), L = slots.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "paged_decode", [&] {
    decode_kernel<scalar_t>(q.data_ptr<scalar_t>(), k_cache.data_ptr<scalar_t>(),
                            v_cache.data_ptr<scalar_t>(), slots.data_ptr<int64_t>(),
                            lens.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), B, H, KVH, D, S, L,
                            static_cast<float>(scale));
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("paged_decode", &paged_decode); }
