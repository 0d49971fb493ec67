// Fused distillation loss, CPU: one row per task, three passes over a row that stays in cache
// (maxima; sums of exponentials; gradient). Sums accumulate in double; values are float32 on the way.
#include "deps_fast.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <limits>

namespace deps_fast {
namespace {

template <typename scalar_t>
void distill_rows(const scalar_t* s_all, const scalar_t* t_all, const int64_t* y_all, float* loss, scalar_t* g_all,
                  int64_t B, int64_t V, float inv_t, float soft_coef, float hard_coef, float eps, float grad_scale) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* s = s_all + r * V;
      const scalar_t* t = t_all ? t_all + r * V : nullptr;
      scalar_t* g = g_all + r * V;
      float m_s = neg_inf, m_t = neg_inf, m_h = neg_inf;
      for (int64_t v = 0; v < V; ++v) {
        const float sv = static_cast<float>(s[v]);
        if (t) {
          m_s = std::fmax(m_s, sv * inv_t);
          m_t = std::fmax(m_t, static_cast<float>(t[v]) * inv_t);
        }
        if (y_all) m_h = std::fmax(m_h, sv);
      }
      double z_s = 0, z_t = 0, a_t = 0, z_h = 0, sum_s = 0;
      for (int64_t v = 0; v < V; ++v) {
        const float sv = static_cast<float>(s[v]);
        if (t) {
          z_s += std::exp(sv * inv_t - m_s);
          const double e = std::exp(static_cast<float>(t[v]) * inv_t - m_t);
          z_t += e;
          a_t += e * (sv * inv_t);
        }
        if (y_all) {
          z_h += std::exp(sv - m_h);
          sum_s += sv;
        }
      }
      double row_loss = 0;
      int64_t y = -1;
      if (t) row_loss += soft_coef * (m_s + std::log(z_s) - a_t / z_t);
      if (y_all) {
        y = y_all[r];
        row_loss += hard_coef * (m_h + std::log(z_h) - (1.0 - eps) * static_cast<float>(s[y]) - eps / V * sum_s);
      }
      loss[r] = static_cast<float>(row_loss);
      const float inv_zs = t ? static_cast<float>(1.0 / z_s) : 0.f, inv_zt = t ? static_cast<float>(1.0 / z_t) : 0.f;
      const float inv_zh = y_all ? static_cast<float>(1.0 / z_h) : 0.f, smooth = eps / V;
      for (int64_t v = 0; v < V; ++v) {
        const float sv = static_cast<float>(s[v]);
        float gv = 0.f;
        if (t) {
          const float p_s = std::exp(sv * inv_t - m_s) * inv_zs;
          const float p_t = std::exp(static_cast<float>(t[v]) * inv_t - m_t) * inv_zt;
          gv += soft_coef * inv_t * (p_s - p_t);
        }
        if (y_all) gv += hard_coef * (std::exp(sv - m_h) * inv_zh - smooth - (v == y ? 1.f - eps : 0.f));
        g[v] = static_cast<scalar_t>(gv * grad_scale);
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, s.scalar_type(), "distill_forward_cpu", [&] {
    distill_rows<scalar_t>(s.data_ptr<scalar_t>(), t.defined() ? t.data_ptr<scalar_t>() : nullptr,
                           y.defined() ? y.data_ptr<int64_t>() : nullptr, loss.data_ptr<float>(),
                           grad.data_ptr<scalar_t>(), B, V, static_cast<float>(inv_t), static_cast<float>(soft_coef),
                           static_cast<float>(hard_coef), static_cast<float>(eps), static_cast<float>(grad_scale));
  });
  return {loss, grad};
}

}  // namespace deps_fast
