// Fused distillation loss, CUDA: one block per row. Pass 1: every thread keeps online (max, sum of exp)
// statistics over a strided slice of the row; the block merges them (warp shuffles, then shared memory).
// Pass 2: every thread writes its slice of the gradient. The row is read twice, the gradient written once.
#include "deps_fast.h"

#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cusparse.h, absent from some toolkits
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace deps_fast {
namespace {

constexpr int kThreads = 512;

// Online softmax statistics: running max m and sum of exp(x - m); `a` is an extra sum carried at the scale of z.
struct Stats {
  float m_s, z_s, m_t, z_t, a_t, m_h, z_h, sum_s;
};

__device__ __forceinline__ void merge(float& m, float& z, float m2, float z2) {
  const float m_new = fmaxf(m, m2);
  if (m_new == -INFINITY) return;  // both empty
  z = z * __expf(m - m_new) + z2 * __expf(m2 - m_new);
  m = m_new;
}

__device__ __forceinline__ void merge_teacher(float& m, float& z, float& a, float m2, float z2, float a2) {
  const float m_new = fmaxf(m, m2);
  if (m_new == -INFINITY) return;
  const float r1 = __expf(m - m_new), r2 = __expf(m2 - m_new);
  z = z * r1 + z2 * r2;
  a = a * r1 + a2 * r2;
  m = m_new;
}

__device__ __forceinline__ void merge_all(Stats& x, const Stats& o) {
  merge(x.m_s, x.z_s, o.m_s, o.z_s);
  merge_teacher(x.m_t, x.z_t, x.a_t, o.m_t, o.z_t, o.a_t);
  merge(x.m_h, x.z_h, o.m_h, o.z_h);
  x.sum_s += o.sum_s;
}

__device__ __forceinline__ Stats shfl_down(const Stats& x, int offset) {
  Stats o;
  o.m_s = __shfl_down_sync(0xffffffff, x.m_s, offset);
  o.z_s = __shfl_down_sync(0xffffffff, x.z_s, offset);
  o.m_t = __shfl_down_sync(0xffffffff, x.m_t, offset);
  o.z_t = __shfl_down_sync(0xffffffff, x.z_t, offset);
  o.a_t = __shfl_down_sync(0xffffffff, x.a_t, offset);
  o.m_h = __shfl_down_sync(0xffffffff, x.m_h, offset);
  o.z_h = __shfl_down_sync(0xffffffff, x.z_h, offset);
  o.sum_s = __shfl_down_sync(0xffffffff, x.sum_s, offset);
  return o;
}

template <typename scalar_t, bool HAS_TEACHER, bool HAS_TARGET>
__global__ void __launch_bounds__(kThreads) distill_kernel(const scalar_t* __restrict__ s_all,
                                                           const scalar_t* __restrict__ t_all,
                                                           const int64_t* __restrict__ y_all,
                                                           float* __restrict__ loss, scalar_t* __restrict__ g_all,
                                                           int64_t V, float inv_t, float soft_coef, float hard_coef,
                                                           float eps, float grad_scale) {
  __shared__ Stats warp_stats[kThreads / 32];
  __shared__ Stats row_stats;
  const int64_t row = blockIdx.x;
  const scalar_t* s = s_all + row * V;
  const scalar_t* t = HAS_TEACHER ? t_all + row * V : nullptr;
  scalar_t* g = g_all + row * V;

  Stats st{-INFINITY, 0.f, -INFINITY, 0.f, 0.f, -INFINITY, 0.f, 0.f};
  for (int64_t v = threadIdx.x; v < V; v += kThreads) {
    const float sv = static_cast<float>(s[v]);
    if (HAS_TEACHER) {
      const float ss = sv * inv_t, tt = static_cast<float>(t[v]) * inv_t;
      merge(st.m_s, st.z_s, ss, 1.f);
      merge_teacher(st.m_t, st.z_t, st.a_t, tt, 1.f, ss);
    }
    if (HAS_TARGET) {
      merge(st.m_h, st.z_h, sv, 1.f);
      st.sum_s += sv;
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) merge_all(st, shfl_down(st, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_stats[warp] = st;
  __syncthreads();
  if (warp == 0) {
    st = lane < kThreads / 32 ? warp_stats[lane] : Stats{-INFINITY, 0.f, -INFINITY, 0.f, 0.f, -INFINITY, 0.f, 0.f};
    for (int offset = 16; offset > 0; offset >>= 1) merge_all(st, shfl_down(st, offset));
    if (lane == 0) {
      row_stats = st;
      float row_loss = 0.f;
      if (HAS_TEACHER) row_loss += soft_coef * (st.m_s + logf(st.z_s) - st.a_t / st.z_t);
      if (HAS_TARGET) {
        const int64_t y = y_all[row];
        // eps = 0: no smoothing term, so -inf (masked) logits give a finite loss as F.cross_entropy does
        row_loss += hard_coef * (st.m_h + logf(st.z_h) - (1.f - eps) * static_cast<float>(s[y]) -
                                 (eps > 0.f ? eps / static_cast<float>(V) * st.sum_s : 0.f));
      }
      loss[row] = row_loss;
    }
  }
  __syncthreads();
  st = row_stats;
  const float inv_zs = HAS_TEACHER ? 1.f / st.z_s : 0.f, inv_zt = HAS_TEACHER ? 1.f / st.z_t : 0.f;
  const float inv_zh = HAS_TARGET ? 1.f / st.z_h : 0.f, smooth = eps / static_cast<float>(V);
  const int64_t y = HAS_TARGET ? y_all[row] : -1;
  for (int64_t v = threadIdx.x; v < V; v += kThreads) {
    const float sv = static_cast<float>(s[v]);
    float gv = 0.f;
    if (HAS_TEACHER) {
      const float p_s = __expf(sv * inv_t - st.m_s) * inv_zs;
      const float p_t = __expf(static_cast<float>(t[v]) * inv_t - st.m_t) * inv_zt;
      gv += soft_coef * inv_t * (p_s - p_t);
    }
    if (HAS_TARGET) gv += hard_coef * (__expf(sv - st.m_h) * inv_zh - smooth - (v == y ? 1.f - eps : 0.f));
    g[v] = static_cast<scalar_t>(gv * grad_scale);
  }
}

template <typename scalar_t, bool HAS_TEACHER, bool HAS_TARGET>
void launch(const at::Tensor& s, const at::Tensor& t, const at::Tensor& y, at::Tensor& loss, at::Tensor& grad,
            float inv_t, float soft_coef, float hard_coef, float eps, float grad_scale) {
  distill_kernel<scalar_t, HAS_TEACHER, HAS_TARGET><<<s.size(0), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      s.data_ptr<scalar_t>(), HAS_TEACHER ? t.data_ptr<scalar_t>() : nullptr,
      HAS_TARGET ? y.data_ptr<int64_t>() : nullptr, loss.data_ptr<float>(), grad.data_ptr<scalar_t>(), s.size(1),
      inv_t, soft_coef, hard_coef, eps, grad_scale);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> distill_forward_cuda(const at::Tensor& student,
                                                        const c10::optional<at::Tensor>& teacher,
                                                        const c10::optional<at::Tensor>& target, double inv_t,
                                                        double soft_coef, double hard_coef, double eps,
                                                        double grad_scale) {
  check_distill_args(student, teacher, target, at::kCUDA);
  const c10::cuda::CUDAGuard guard(student.device());
  const auto s = student.contiguous();
  const auto t = teacher ? teacher->contiguous() : at::Tensor();
  const auto y = target ? target->contiguous() : at::Tensor();
  auto loss = at::empty({s.size(0)}, s.options().dtype(at::kFloat));
  auto grad = at::empty_like(s);
  if (s.size(0) == 0) return {loss, grad};
  const float a = inv_t, b = soft_coef, c = hard_coef, d = eps, e = grad_scale;
  FLOAT_TYPE_SWITCH(s.scalar_type(), "distill_forward_cuda", scalar_t, [&] {
    if (t.defined() && y.defined()) launch<scalar_t, true, true>(s, t, y, loss, grad, a, b, c, d, e);
    else if (t.defined()) launch<scalar_t, true, false>(s, t, y, loss, grad, a, b, c, d, e);
    else launch<scalar_t, false, true>(s, t, y, loss, grad, a, b, c, d, e);
  });
  return {loss, grad};
}

}  // namespace deps_fast
