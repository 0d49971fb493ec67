// CPU kernels of the fused elastic BatchNorm + activation (see deps_fast.h for the contract).
//
// Design
//  * Both layouts natively, never a layout copy: NCHW works on (n, ch) planes (a channel's values are HW-long
//    contiguous runs), channels_last on pixel rows (each row holds all c channels contiguously).
//  * Every reduction is float32 inside a chunk that stays in cache, float64 across chunks. The statistics are
//    two-pass inside each chunk (chunk mean, then squared deviations from it) and the chunks are merged with
//    Chan's pairwise formula, so x is read from memory once and the variance does not cancel when |mean| >> std.
//  * Reductions are deterministic: the chunking depends only on the shape, and the chunk partials are merged in
//    a fixed order, whatever the thread count.
//  * The activation is a template parameter (0 none, 1 relu, 2 relu6, 3 hswish); its derivative follows torch's
//    conventions at the kinks (relu: 0 at z = 0; relu6: 0 at z = 0 and z = 6; hswish: z / 3 + 1 / 2 on
//    [-3, 3], 0 below, 1 above).
#include "deps_fast.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace deps_fast {
namespace {

constexpr int64_t kChunkElems = 8192;  // elements of one float32 partial: a chunk stays in L1/L2

template <int ACT>
inline float act_forward(float z) {
  if constexpr (ACT == 1) return z < 0.f ? 0.f : z;  // a NaN passes through, as in torch
  if constexpr (ACT == 2) return z < 0.f ? 0.f : (z > 6.f ? 6.f : z);
  if constexpr (ACT == 3) {
    float t = z + 3.f;
    t = t < 0.f ? 0.f : t;
    t = t > 6.f ? 6.f : t;
    return z * t / 6.f;
  }
  return z;
}

// grad_y * act'(z), with torch's boundary conventions (threshold_backward, hardtanh_backward, hardswish_backward).
template <int ACT>
inline float act_backward(float g, float z) {
  if constexpr (ACT == 1) return z <= 0.f ? 0.f : g;
  if constexpr (ACT == 2) return (z <= 0.f || z >= 6.f) ? 0.f : g;
  if constexpr (ACT == 3) return z < -3.f ? 0.f : (z <= 3.f ? g * (z / 3.f + 0.5f) : g);
  return g;
}

#define ACT_SWITCH(ACT_VALUE, ACT, ...)                                     \
  [&] {                                                                     \
    switch (ACT_VALUE) {                                                    \
      case 1: { static constexpr int ACT = 1; return __VA_ARGS__(); }       \
      case 2: { static constexpr int ACT = 2; return __VA_ARGS__(); }       \
      case 3: { static constexpr int ACT = 3; return __VA_ARGS__(); }       \
      default: { static constexpr int ACT = 0; return __VA_ARGS__(); }      \
    }                                                                       \
  }()

inline float to_f(float v) { return v; }
inline float to_f(c10::BFloat16 v) { return static_cast<float>(v); }
inline float to_f(c10::Half v) { return static_cast<float>(v); }

// 8-lane float vectors (GCC vector extensions; two SSE registers on baseline x86-64). The inner loops are written
// with them because GCC does not vectorise reductions whose terms go through the activation's branches.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

template <typename T>
inline v8f load8(const T* p) {
  v8f v;
  for (int j = 0; j < 8; ++j) v[j] = to_f(p[j]);
  return v;
}
template <typename T>
inline void store8(T* p, v8f v) {
  for (int j = 0; j < 8; ++j) p[j] = static_cast<T>(v[j]);
}
inline v8f splat(float a) { return v8f{a, a, a, a, a, a, a, a}; }
// m ? a : b per lane (m: the all-ones / all-zeros lanes of a vector comparison)
inline v8f sel(v8i m, v8f a, v8f b) { return (v8f)((m & (v8i)a) | (~m & (v8i)b)); }
// lane sum in a fixed order
inline float hsum(v8f v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

// The vector forms of act_forward / act_backward, lane for lane the same results (NaN included).
template <int ACT>
inline v8f act_forward_v(v8f z) {
  const v8f zero = splat(0.f);
  if constexpr (ACT == 1) return sel(z < zero, zero, z);
  if constexpr (ACT == 2) return sel(z < zero, zero, sel(z > splat(6.f), splat(6.f), z));
  if constexpr (ACT == 3) {
    v8f t = z + splat(3.f);
    t = sel(t < zero, zero, t);
    t = sel(t > splat(6.f), splat(6.f), t);
    return z * t / splat(6.f);
  }
  return z;
}

template <int ACT>
inline v8f act_backward_v(v8f g, v8f z) {
  const v8f zero = splat(0.f);
  if constexpr (ACT == 1) return sel(z <= zero, zero, g);
  if constexpr (ACT == 2) return sel((z <= zero) | (z >= splat(6.f)), zero, g);
  if constexpr (ACT == 3)
    return sel(z < splat(-3.f), zero, sel(z <= splat(3.f), g * (z / splat(3.f) + splat(0.5f)), g));
  return g;
}

// Chan's merge of (count, mean, M2) running triples, in float64.
struct Moments {
  double n = 0, mean = 0, m2 = 0;
  void merge(double nb, double mean_b, double m2_b) {
    if (nb == 0) return;
    const double total = n + nb, delta = mean_b - mean;
    mean += delta * (nb / total);
    m2 += m2_b + delta * delta * (n * nb / total);
    n = total;
  }
};

// Sum of p[0..len) in float over 8 lanes.
template <typename T>
inline float run_sum(const T* p, int64_t len) {
  v8f acc = splat(0.f);
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) acc += load8(p + i);
  float s = hsum(acc);
  for (; i < len; ++i) s += to_f(p[i]);
  return s;
}

template <typename T>
inline float run_sq_dev(const T* p, int64_t len, float m) {
  v8f acc = splat(0.f);
  const v8f mv = splat(m);
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const v8f d = load8(p + i) - mv;
    acc += d * d;
  }
  float s = hsum(acc);
  for (; i < len; ++i) {
    const float d = to_f(p[i]) - m;
    s += d * d;
  }
  return s;
}

// ---- layout description ---------------------------------------------------------------------------------------
struct Shape {
  int64_t N, C, HW;
  bool cl;  // channels_last: element (n, ch, p) at (n * HW + p) * C + ch; else at (n * C + ch) * HW + p
};

inline Shape shape_of(const at::Tensor& x, bool cl) { return {x.size(0), x.size(1), x.size(2) * x.size(3), cl}; }

// channels_last row chunks: rows per chunk and chunk count depend on the shape only.
inline int64_t rows_per_chunk(const Shape& s) { return std::max<int64_t>(16, kChunkElems / s.C); }

// ---- statistics -----------------------------------------------------------------------------------------------
template <typename T>
void stats_kernel(const T* x, const Shape& s, float* mean_out, float* var_out) {
  const int64_t N = s.N, C = s.C, HW = s.HW;
  if (!s.cl) {
    const int64_t planes_per_chunk = std::max<int64_t>(1, kChunkElems / std::max<int64_t>(HW, 1));
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t ch = c0; ch < c1; ++ch) {
        Moments m;
        for (int64_t n0 = 0; n0 < N; n0 += planes_per_chunk) {
          const int64_t n1 = std::min(N, n0 + planes_per_chunk);
          float sum = 0.f;
          for (int64_t n = n0; n < n1; ++n) sum += run_sum(x + (n * C + ch) * HW, HW);
          const double nb = double(n1 - n0) * HW;
          const float mb = static_cast<float>(sum / nb);
          float m2 = 0.f;
          for (int64_t n = n0; n < n1; ++n) m2 += run_sq_dev(x + (n * C + ch) * HW, HW, mb);
          m.merge(nb, mb, m2);
        }
        mean_out[ch] = static_cast<float>(m.mean);
        var_out[ch] = static_cast<float>(m.m2 / m.n);
      }
    });
    return;
  }
  const int64_t R = N * HW, rpc = rows_per_chunk(s), chunks = (R + rpc - 1) / rpc;
  std::vector<float> part_mean(chunks * C), part_m2(chunks * C);
  at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<float> acc(C);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t r0 = k * rpc, r1 = std::min(R, r0 + rpc);
      float* pm = part_mean.data() + k * C;
      float* pv = part_m2.data() + k * C;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = x + r * C;
        int64_t ch = 0;
        for (; ch + 8 <= C; ch += 8) store8(acc.data() + ch, load8(acc.data() + ch) + load8(row + ch));
        for (; ch < C; ++ch) acc[ch] += to_f(row[ch]);
      }
      const float inv = 1.f / float(r1 - r0);
      for (int64_t ch = 0; ch < C; ++ch) pm[ch] = acc[ch] * inv;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = x + r * C;
        int64_t ch = 0;
        for (; ch + 8 <= C; ch += 8) {
          const v8f d = load8(row + ch) - load8(pm + ch);
          store8(acc.data() + ch, load8(acc.data() + ch) + d * d);
        }
        for (; ch < C; ++ch) {
          const float d = to_f(row[ch]) - pm[ch];
          acc[ch] += d * d;
        }
      }
      std::copy(acc.begin(), acc.end(), pv);
    }
  });
  at::parallel_for(0, C, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      Moments m;
      for (int64_t k = 0; k < chunks; ++k) {
        const int64_t r0 = k * rpc, r1 = std::min(R, r0 + rpc);
        m.merge(double(r1 - r0), part_mean[k * C + ch], part_m2[k * C + ch]);
      }
      mean_out[ch] = static_cast<float>(m.mean);
      var_out[ch] = static_cast<float>(m.m2 / m.n);
    }
  });
}

// ---- forward: y = act(x * scale + shift) ------------------------------------------------------------------------
template <typename T, int ACT>
void forward_kernel(const T* x, T* y, const Shape& s, const float* scale, const float* shift) {
  const int64_t N = s.N, C = s.C, HW = s.HW;
  if (!s.cl) {
    at::parallel_for(0, N * C, std::max<int64_t>(1, 32768 / std::max<int64_t>(HW, 1)), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t ch = p % C;
        const float a = scale[ch], b = shift[ch];
        const T* xp = x + p * HW;
        T* yp = y + p * HW;
        const v8f av = splat(a), bv = splat(b);
        int64_t i = 0;
        for (; i + 8 <= HW; i += 8) store8(yp + i, act_forward_v<ACT>(load8(xp + i) * av + bv));
        for (; i < HW; ++i) yp[i] = static_cast<T>(act_forward<ACT>(to_f(xp[i]) * a + b));
      }
    });
    return;
  }
  at::parallel_for(0, N * HW, std::max<int64_t>(1, 32768 / C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * C;
      T* yr = y + r * C;
      int64_t ch = 0;
      for (; ch + 8 <= C; ch += 8)
        store8(yr + ch, act_forward_v<ACT>(load8(xr + ch) * load8(scale + ch) + load8(shift + ch)));
      for (; ch < C; ++ch) yr[ch] = static_cast<T>(act_forward<ACT>(to_f(xr[ch]) * scale[ch] + shift[ch]));
    }
  });
}

// ---- backward reductions: sum dz, sum dz * (x - mean) -----------------------------------------------------------
template <typename T, int ACT>
void backward_reduce_kernel(const T* g, const T* x, const Shape& s, const float* scale, const float* shift,
                            const float* mean, float* sum_dz, float* sum_dz_xmu) {
  const int64_t N = s.N, C = s.C, HW = s.HW;
  if (!s.cl) {
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t ch = c0; ch < c1; ++ch) {
        const float a = scale[ch], b = shift[ch], m = mean[ch];
        double sd = 0, sdx = 0;
        for (int64_t n = 0; n < N; ++n) {
          const T* gp = g + (n * C + ch) * HW;
          const T* xp = x + (n * C + ch) * HW;
          const v8f av = splat(a), bv = splat(b), mv = splat(m);
          v8f acc_d = splat(0.f), acc_x = splat(0.f);
          int64_t i = 0;
          for (; i + 8 <= HW; i += 8) {
            const v8f xv = load8(xp + i);
            const v8f dz = act_backward_v<ACT>(load8(gp + i), xv * av + bv);
            acc_d += dz;
            acc_x += dz * (xv - mv);
          }
          float pd = hsum(acc_d), px = hsum(acc_x);
          for (; i < HW; ++i) {
            const float xv = to_f(xp[i]);
            const float dz = act_backward<ACT>(to_f(gp[i]), xv * a + b);
            pd += dz;
            px += dz * (xv - m);
          }
          sd += pd;
          sdx += px;
        }
        sum_dz[ch] = static_cast<float>(sd);
        sum_dz_xmu[ch] = static_cast<float>(sdx);
      }
    });
    return;
  }
  const int64_t R = N * HW, rpc = rows_per_chunk(s), chunks = (R + rpc - 1) / rpc;
  std::vector<float> part_d(chunks * C), part_x(chunks * C);
  at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t r0 = k * rpc, r1 = std::min(R, r0 + rpc);
      float* pd = part_d.data() + k * C;
      float* px = part_x.data() + k * C;
      std::fill(pd, pd + C, 0.f);
      std::fill(px, px + C, 0.f);
      for (int64_t r = r0; r < r1; ++r) {
        const T* gr = g + r * C;
        const T* xr = x + r * C;
        int64_t ch = 0;
        for (; ch + 8 <= C; ch += 8) {
          const v8f xv = load8(xr + ch);
          const v8f dz = act_backward_v<ACT>(load8(gr + ch), xv * load8(scale + ch) + load8(shift + ch));
          store8(pd + ch, load8(pd + ch) + dz);
          store8(px + ch, load8(px + ch) + dz * (xv - load8(mean + ch)));
        }
        for (; ch < C; ++ch) {
          const float xv = to_f(xr[ch]);
          const float dz = act_backward<ACT>(to_f(gr[ch]), xv * scale[ch] + shift[ch]);
          pd[ch] += dz;
          px[ch] += dz * (xv - mean[ch]);
        }
      }
    }
  });
  at::parallel_for(0, C, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      double sd = 0, sdx = 0;
      for (int64_t k = 0; k < chunks; ++k) {
        sd += part_d[k * C + ch];
        sdx += part_x[k * C + ch];
      }
      sum_dz[ch] = static_cast<float>(sd);
      sum_dz_xmu[ch] = static_cast<float>(sdx);
    }
  });
}

// ---- backward input ---------------------------------------------------------------------------------------------
// training: grad_x = a * dz - b * (x - mean) - d with a = w * invstd, b = a * invstd^2 * sum_dz_xmu / count,
// d = a * sum_dz / count; eval: grad_x = scale * dz.
template <typename T, int ACT, bool TRAIN>
void backward_input_kernel(const T* g, const T* x, T* gx, const Shape& s, const float* scale, const float* shift,
                           const float* mean, const float* a, const float* b, const float* d) {
  const int64_t N = s.N, C = s.C, HW = s.HW;
  auto value = [&](float gv, float xv, int64_t ch) {
    const float dz = act_backward<ACT>(gv, xv * scale[ch] + shift[ch]);
    if constexpr (TRAIN) return a[ch] * dz - b[ch] * (xv - mean[ch]) - d[ch];
    return scale[ch] * dz;
  };
  if (!s.cl) {
    at::parallel_for(0, N * C, std::max<int64_t>(1, 32768 / std::max<int64_t>(HW, 1)), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t ch = p % C;
        const float sc = scale[ch], sh = shift[ch], m = mean[ch];
        const float av = TRAIN ? a[ch] : sc, bv = TRAIN ? b[ch] : 0.f, dv = TRAIN ? d[ch] : 0.f;
        const T* gp = g + p * HW;
        const T* xp = x + p * HW;
        T* op = gx + p * HW;
        const v8f scv = splat(sc), shv = splat(sh), mv = splat(m), avv = splat(av), bvv = splat(bv),
                  dvv = splat(dv);
        int64_t i = 0;
        for (; i + 8 <= HW; i += 8) {
          const v8f xv = load8(xp + i);
          const v8f dz = act_backward_v<ACT>(load8(gp + i), xv * scv + shv);
          if constexpr (TRAIN) store8(op + i, avv * dz - bvv * (xv - mv) - dvv);
          else store8(op + i, avv * dz);
        }
        for (; i < HW; ++i) {
          const float xv = to_f(xp[i]);
          const float dz = act_backward<ACT>(to_f(gp[i]), xv * sc + sh);
          float r;
          if constexpr (TRAIN) r = av * dz - bv * (xv - m) - dv;
          else r = av * dz;
          op[i] = static_cast<T>(r);
        }
      }
    });
    return;
  }
  at::parallel_for(0, N * HW, std::max<int64_t>(1, 32768 / C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* gr = g + r * C;
      const T* xr = x + r * C;
      T* orow = gx + r * C;
      int64_t ch = 0;
      for (; ch + 8 <= C; ch += 8) {
        const v8f xv = load8(xr + ch);
        const v8f dz = act_backward_v<ACT>(load8(gr + ch), xv * load8(scale + ch) + load8(shift + ch));
        if constexpr (TRAIN)
          store8(orow + ch, load8(a + ch) * dz - load8(b + ch) * (xv - load8(mean + ch)) - load8(d + ch));
        else
          store8(orow + ch, load8(scale + ch) * dz);
      }
      for (; ch < C; ++ch) orow[ch] = static_cast<T>(value(to_f(gr[ch]), to_f(xr[ch]), ch));
    }
  });
}

// ---- argument handling ------------------------------------------------------------------------------------------
// The layout the kernels run in: channels_last only when x is unambiguously NHWC; anything else NCHW.
inline bool is_cl(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::Tensor dense(const at::Tensor& t, bool cl) {
  return t.contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

inline void check_x(const char* fn, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), fn, ": ", name, " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK(t.dim() == 4, fn, ": ", name, " must be 4-D [N, c, H, W], got shape ", t.sizes());
  check_float_dtype(fn, name, t);
}

inline void check_vec(const char* fn, const char* name, const at::Tensor& t, int64_t c) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), fn, ": ", name, " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, fn, ": ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == c, fn, ": ", name, " must be [c] = [", c, "], got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), fn, ": ", name, " must be contiguous");
}

inline void check_act(const char* fn, int64_t act) {
  TORCH_CHECK(act >= 0 && act <= 3, fn, ": act must be 0 (none), 1 (relu), 2 (relu6) or 3 (hswish), got ", act);
}

inline void check_grad(const char* fn, const at::Tensor& g, const at::Tensor& x) {
  check_x(fn, "grad_y", g);
  TORCH_CHECK(g.sizes() == x.sizes(), fn, ": grad_y shape ", g.sizes(), " must equal x shape ", x.sizes());
  TORCH_CHECK(g.scalar_type() == x.scalar_type(), fn, ": grad_y dtype ", g.scalar_type(), " must equal x dtype ",
              x.scalar_type());
}

inline at::Tensor vec_out(const at::Tensor& x) { return at::empty({x.size(1)}, x.options().dtype(at::kFloat)); }

}  // namespace

std::tuple<at::Tensor, at::Tensor> bn_act_stats_cpu(const at::Tensor& x_in) {
  const char* fn = "bn_act_stats_cpu";
  check_x(fn, "x", x_in);
  const bool cl = is_cl(x_in);
  const at::Tensor x = dense(x_in, cl);
  at::Tensor mean = vec_out(x), var = vec_out(x);
  if (x.numel() == 0) {
    mean.fill_(NAN);  // no values: undefined statistics, as torch's mean of nothing
    var.fill_(NAN);
    return {mean, var};
  }
  FLOAT_TYPE_SWITCH(x.scalar_type(), fn, T, [&] {
    stats_kernel<T>(x.data_ptr<T>(), shape_of(x, cl), mean.data_ptr<float>(), var.data_ptr<float>());
  });
  return {mean, var};
}

at::Tensor bn_act_forward_cpu(const at::Tensor& x_in, const at::Tensor& scale, const at::Tensor& shift, int64_t act) {
  const char* fn = "bn_act_forward_cpu";
  check_x(fn, "x", x_in);
  check_vec(fn, "scale", scale, x_in.size(1));
  check_vec(fn, "shift", shift, x_in.size(1));
  check_act(fn, act);
  const bool cl = is_cl(x_in);
  const at::Tensor x = dense(x_in, cl);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(cl ? at::MemoryFormat::ChannelsLast
                                                                    : at::MemoryFormat::Contiguous));
  if (x.numel() == 0) return y;
  FLOAT_TYPE_SWITCH(x.scalar_type(), fn, T, [&] {
    ACT_SWITCH(act, ACT, [&] {
      forward_kernel<T, ACT>(x.data_ptr<T>(), y.data_ptr<T>(), shape_of(x, cl), scale.data_ptr<float>(),
                             shift.data_ptr<float>());
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> bn_act_backward_reduce_cpu(const at::Tensor& grad_y, const at::Tensor& x_in,
                                                              const at::Tensor& scale, const at::Tensor& shift,
                                                              const at::Tensor& mean, int64_t act) {
  const char* fn = "bn_act_backward_reduce_cpu";
  check_x(fn, "x", x_in);
  check_grad(fn, grad_y, x_in);
  const int64_t c = x_in.size(1);
  check_vec(fn, "scale", scale, c);
  check_vec(fn, "shift", shift, c);
  check_vec(fn, "mean", mean, c);
  check_act(fn, act);
  const bool cl = is_cl(x_in);
  const at::Tensor x = dense(x_in, cl), g = dense(grad_y, cl);
  at::Tensor sum_dz = vec_out(x), sum_dz_xmu = vec_out(x);
  if (x.numel() == 0) {
    sum_dz.zero_();
    sum_dz_xmu.zero_();
    return {sum_dz, sum_dz_xmu};
  }
  FLOAT_TYPE_SWITCH(x.scalar_type(), fn, T, [&] {
    ACT_SWITCH(act, ACT, [&] {
      backward_reduce_kernel<T, ACT>(g.data_ptr<T>(), x.data_ptr<T>(), shape_of(x, cl), scale.data_ptr<float>(),
                                     shift.data_ptr<float>(), mean.data_ptr<float>(), sum_dz.data_ptr<float>(),
                                     sum_dz_xmu.data_ptr<float>());
    });
  });
  return {sum_dz, sum_dz_xmu};
}

at::Tensor bn_act_backward_input_cpu(const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& scale,
                                     const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& invstd,
                                     const at::Tensor& weight_c, const at::Tensor& sum_dz,
                                     const at::Tensor& sum_dz_xmu, int64_t count, int64_t act, bool training) {
  const char* fn = "bn_act_backward_input_cpu";
  check_x(fn, "x", x_in);
  check_grad(fn, grad_y, x_in);
  const int64_t c = x_in.size(1);
  check_vec(fn, "scale", scale, c);
  check_vec(fn, "shift", shift, c);
  check_vec(fn, "mean", mean, c);
  check_vec(fn, "invstd", invstd, c);
  check_vec(fn, "weight_c", weight_c, c);
  check_vec(fn, "sum_dz", sum_dz, c);
  check_vec(fn, "sum_dz_xmu", sum_dz_xmu, c);
  check_act(fn, act);
  TORCH_CHECK(count > 0, fn, ": count must be positive, got ", count);
  const bool cl = is_cl(x_in);
  const at::Tensor x = dense(x_in, cl), g = dense(grad_y, cl);
  at::Tensor gx = at::empty(x.sizes(), x.options().memory_format(cl ? at::MemoryFormat::ChannelsLast
                                                                     : at::MemoryFormat::Contiguous));
  if (x.numel() == 0) return gx;
  // per-channel coefficients of the training formula, in float32 as the kernels use them
  std::vector<float> a(c), b(c), d(c);
  const float* w = weight_c.data_ptr<float>();
  const float* is = invstd.data_ptr<float>();
  const float* sd = sum_dz.data_ptr<float>();
  const float* sdx = sum_dz_xmu.data_ptr<float>();
  for (int64_t ch = 0; ch < c; ++ch) {
    const double av = double(w[ch]) * is[ch];
    a[ch] = static_cast<float>(av);
    b[ch] = static_cast<float>(av * is[ch] * is[ch] * sdx[ch] / double(count));
    d[ch] = static_cast<float>(av * sd[ch] / double(count));
  }
  FLOAT_TYPE_SWITCH(x.scalar_type(), fn, T, [&] {
    ACT_SWITCH(act, ACT, [&] {
      auto run = [&](auto train) {
        backward_input_kernel<T, ACT, decltype(train)::value>(
            g.data_ptr<T>(), x.data_ptr<T>(), gx.data_ptr<T>(), shape_of(x, cl), scale.data_ptr<float>(),
            shift.data_ptr<float>(), mean.data_ptr<float>(), a.data(), b.data(), d.data());
      };
      if (training) run(std::true_type{});
      else run(std::false_type{});
    });
  });
  return gx;
}

}  // namespace deps_fast
