// Fused distillation loss, CPU. One row per task: the row is staged as float, then three passes over it
// (maxima; exponentials and their sums; gradient). Each exponential is computed once and kept for the
// gradient pass (soft and hard terms share it when T = 1). The exponential is a branch-free polynomial and
// every reduction runs over kLanes independent accumulators, so the compiler vectorises all passes; the
// row kernel is also built for AVX2+FMA (x86-64-v3) and picked at run time where the CPU has it.
#include "deps_fast.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DEPS_FAST_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DEPS_FAST_CLONES
#endif

namespace deps_fast {
namespace {

constexpr int kLanes = 16;

// exp(x) for x <= 0 (softmax arguments) with ~1 ulp error: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by the
// Cephes degree-6 polynomial, 2^n through the exponent bits. NaN stays NaN; arguments below -87 give
// ~1e-38 instead of 0, which no softmax sum can notice.
inline float exp_neg(float x) {
  x = x < -87.0f ? -87.0f : x;  // a NaN compares false and passes through
  x = x > 88.0f ? 88.0f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Row statistics and gradient on float rows. s, t: logits (t may be null); es, et, eh: scratch rows.
struct RowArgs {
  float inv_t, soft_coef, hard_coef, eps, grad_scale;
};

DEPS_FAST_CLONES float distill_row(const float* __restrict s, const float* __restrict t, int64_t y, int64_t V,
                                   float* __restrict es, float* __restrict et, float* __restrict eh,
                                   float* __restrict g, RowArgs a) {
  const bool teacher = t != nullptr, target = y >= 0, shared = teacher && target && a.inv_t == 1.0f;
  // pass 1: maxima (a NaN wins the comparison chain and propagates, as in the reference)
  float ms[kLanes], mt[kLanes];
  for (int j = 0; j < kLanes; ++j) ms[j] = mt[j] = -INFINITY;
  int64_t v = 0;
  for (; v + kLanes <= V; v += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      ms[j] = ms[j] > s[v + j] ? ms[j] : s[v + j];
      if (teacher) mt[j] = mt[j] > t[v + j] ? mt[j] : t[v + j];
    }
  float max_s = -INFINITY, max_t = -INFINITY;
  for (; v < V; ++v) {
    max_s = max_s > s[v] ? max_s : s[v];
    if (teacher) max_t = max_t > t[v] ? max_t : t[v];
  }
  for (int j = 0; j < kLanes; ++j) {
    max_s = max_s > ms[j] ? max_s : ms[j];
    max_t = max_t > mt[j] ? max_t : mt[j];
  }
  // pass 2: exponentials (kept) and their sums
  float zs[kLanes] = {}, zt[kLanes] = {}, at[kLanes] = {}, zh[kLanes] = {}, ss[kLanes] = {};
  const float m_s = max_s * a.inv_t, m_t = max_t * a.inv_t, m_h = max_s, inv_t = a.inv_t;
  auto body = [&](int64_t i, int j) {
    if (teacher) {
      const float e_s = exp_neg(s[i] * inv_t - m_s), e_t = exp_neg(t[i] * inv_t - m_t);
      es[i] = e_s;
      et[i] = e_t;
      zs[j] += e_s;
      zt[j] += e_t;
      at[j] += e_t * (s[i] * inv_t);
    }
    if (target) {
      if (!shared) {
        const float e_h = exp_neg(s[i] - m_h);
        eh[i] = e_h;
        zh[j] += e_h;
      }
      ss[j] += s[i];
    }
  };
  for (v = 0; v + kLanes <= V; v += kLanes)
    for (int j = 0; j < kLanes; ++j) body(v + j, j);
  for (; v < V; ++v) body(v, 0);
  double z_s = 0, z_t = 0, a_t = 0, z_h = 0, sum_s = 0;
  for (int j = 0; j < kLanes; ++j) {
    z_s += zs[j];
    z_t += zt[j];
    a_t += at[j];
    z_h += zh[j];
    sum_s += ss[j];
  }
  if (shared) {
    z_h = z_s;
    eh = es;
  }
  double loss = 0;
  if (teacher) loss += a.soft_coef * (m_s + std::log(z_s) - a_t / z_t);
  // eps = 0 has no smoothing term: -inf (masked) logits then give F.cross_entropy's finite loss, not 0 * -inf
  if (target) loss += a.hard_coef * (m_h + std::log(z_h) - (1.0 - a.eps) * s[y] - (a.eps > 0 ? a.eps / V * sum_s : 0.0));
  // pass 3: gradient from the kept exponentials
  const float cs = teacher ? a.soft_coef * inv_t * a.grad_scale : 0.f, cs_s = teacher ? cs / z_s : 0.f,
              cs_t = teacher ? cs / z_t : 0.f;
  const float ch = target ? a.hard_coef * a.grad_scale : 0.f, ch_h = target ? ch / z_h : 0.f,
              ch_q = ch * a.eps / V;
  for (v = 0; v < V; ++v) {
    float gv = 0.f;
    if (teacher) gv += cs_s * es[v] - cs_t * et[v];
    if (target) gv += ch_h * eh[v] - ch_q;
    g[v] = gv;
  }
  if (target) g[y] -= ch * (1.f - a.eps);
  return static_cast<float>(loss);
}

template <typename scalar_t>
void distill_rows(const scalar_t* s_all, const scalar_t* t_all, const int64_t* y_all, float* loss, scalar_t* g_all,
                  int64_t B, int64_t V, RowArgs args) {
  constexpr bool is_float = std::is_same_v<scalar_t, float>;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    // per task scratch: staged rows (low precision only), kept exponentials, float gradient (low precision only)
    std::vector<float> buf(static_cast<size_t>(V) * (is_float ? 3 : 6));
    float* es = buf.data();
    float* et = es + V;
    float* eh = et + V;
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* s = s_all + r * V;
      const scalar_t* t = t_all ? t_all + r * V : nullptr;
      scalar_t* g = g_all + r * V;
      const int64_t y = y_all ? y_all[r] : -1;
      if constexpr (is_float) {
        loss[r] = distill_row(s, t, y, V, es, et, eh, g, args);
      } else {
        float* sf = eh + V;
        float* tf = sf + V;
        float* gf = tf + V;
        for (int64_t v = 0; v < V; ++v) sf[v] = static_cast<float>(s[v]);
        if (t)
          for (int64_t v = 0; v < V; ++v) tf[v] = static_cast<float>(t[v]);
        loss[r] = distill_row(sf, t ? tf : nullptr, y, V, es, et, eh, gf, args);
        for (int64_t v = 0; v < V; ++v) g[v] = static_cast<scalar_t>(gf[v]);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> distill_forward_cpu(const at::Tensor& student,
                                                       const c10::optional<at::Tensor>& teacher,
                                                       const c10::optional<at::Tensor>& target, double inv_t,
                                                       double soft_coef, double hard_coef, double eps,
                                                       double grad_scale) {
  check_distill_args(student, teacher, target, at::kCPU);
  const auto s = student.contiguous();
  const auto t = teacher ? teacher->contiguous() : at::Tensor();
  const auto y = target ? target->contiguous() : at::Tensor();
  const int64_t B = s.size(0), V = s.size(1);
  auto loss = at::empty({B}, s.options().dtype(at::kFloat));
  auto grad = at::empty({B, V}, s.options());
  const RowArgs args{static_cast<float>(inv_t), static_cast<float>(soft_coef), static_cast<float>(hard_coef),
                     static_cast<float>(eps), static_cast<float>(grad_scale)};
  TORCH_CHECK(s.scalar_type() != at::kDouble, "distill_forward_cpu: student.dtype float64 is not supported");
  FLOAT_TYPE_SWITCH(s.scalar_type(), "distill_forward_cpu", scalar_t, [&] {
    distill_rows<scalar_t>(s.data_ptr<scalar_t>(), t.defined() ? t.data_ptr<scalar_t>() : nullptr,
                           y.defined() ? y.data_ptr<int64_t>() : nullptr, loss.data_ptr<float>(),
                           grad.data_ptr<scalar_t>(), B, V, args);
  });
  return {loss, grad};
}

}  // namespace deps_fast
