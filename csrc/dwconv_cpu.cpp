// CPU kernels of the elastic depthwise 2-D convolution (see deps_fast.h for the contract).
//
// Design
//  * All arithmetic is float32 (inputs of bf16/fp16 are widened while being staged; outputs are rounded once).
//  * NCHW: one task per (n, ch) plane. The plane is staged into a zero-padded float buffer (for stride 2 each
//    padded row is split into its even and odd columns, so every tap reads a contiguous run). A row kernel then
//    computes 32 outputs at a time in registers (4 x 8-lane accumulators, the k x k taps fully unrolled for
//    k = 1/3/5/7). Borders cost nothing: they are the zero padding. grad_input at stride 1 is the same kernel
//    with the flipped window; at stride 2 it is split into its 4 polyphase sub-convolutions (even/odd rows x
//    even/odd columns), each again a dense stride-1 correlation on the zero-padded grad_out plane.
//  * channels_last: one task per output row (n, oh); the inner dimension is the channel vector. The used
//    window is repacked once per call into a [k*k][c] float table (read from w in place; the parameter itself
//    is never copied or cropped). Interior pixels are done 4 at a time x 16 channels in registers; border
//    pixels use the valid tap range only. Low-precision (or c % 8 != 0) rows are widened into a small ring of
//    k float rows so each input row is converted once per task.
//  * grad_weight is deterministic: NCHW computes one [k*k] partial per (n, ch) plane and sums them over n in
//    order; channels_last splits rows into at most 16 chunks (a count fixed by the shape, not by the thread
//    count) x 64-channel groups, and sums the chunk partials in order. Lane sums use a fixed tree.
//  * The kernel section below is compiled twice (baseline x86-64 and AVX2+FMA via GCC's target pragma) by
//    including this file into itself; the AVX2 copy is picked at run time when the CPU has it.

#ifndef DEPS_FAST_DWCONV_CPU_KERNEL_PASS
// ================================================================================================================
// Translation unit proper: common helpers, the two kernel instantiations and the checked entry points.
// ================================================================================================================
#include "deps_fast.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DEPS_FAST_DWCONV_NO_MULTIVERSION)
#define DEPS_FAST_DWCONV_MULTI 1
#include <immintrin.h>
#endif

#if !defined(__GNUC__)
#error "dwconv_cpu.cpp uses GCC/Clang vector extensions"
#endif

#define DW_INL inline __attribute__((always_inline))

namespace deps_fast {
namespace dwcpu {

static inline int64_t round8(int64_t v) { return (v + 7) / 8 * 8; }

}  // namespace dwcpu
}  // namespace deps_fast

#pragma GCC diagnostic ignored "-Wpsabi"
#define DEPS_FAST_DWCONV_CPU_KERNEL_PASS 1

#ifdef DEPS_FAST_DWCONV_MULTI
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define DW_ISA_AVX2 1
namespace deps_fast {
namespace dwcpu {
namespace avx2 {
#include "dwconv_cpu.cpp"
}  // namespace avx2
}  // namespace dwcpu
}  // namespace deps_fast
#undef DW_ISA_AVX2
#pragma GCC pop_options
#endif

namespace deps_fast {
namespace dwcpu {
namespace base {
#include "dwconv_cpu.cpp"
}  // namespace base
}  // namespace dwcpu
}  // namespace deps_fast

#undef DEPS_FAST_DWCONV_CPU_KERNEL_PASS
// (-Wpsabi stays off: GCC reports the 32-byte vector ABI note when it emits the baseline functions at the end.)

#ifdef DEPS_FAST_DWCONV_MULTI
#define DW_CALL(fn, ...) (use_avx2() ? dwcpu::avx2::fn(__VA_ARGS__) : dwcpu::base::fn(__VA_ARGS__))
#else
#define DW_CALL(fn, ...) dwcpu::base::fn(__VA_ARGS__)
#endif

namespace deps_fast {
namespace {

[[maybe_unused]] bool use_avx2() {
#ifdef DEPS_FAST_DWCONV_MULTI
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
#else
  return false;
#endif
}

void check_dtype(const char* fn, const at::Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf, fn, ": ", name,
              " must be float32, bfloat16 or float16, got ", st);
}

// Checks shared by the three entry points; returns C_w's window size K.
int64_t check_common(const char* fn, const at::Tensor& t, const char* tname, const at::Tensor& w, int64_t k,
                     int64_t stride) {
  TORCH_CHECK(t.device().is_cpu(), fn, ": ", tname, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(w.device().is_cpu(), fn, ": w must be a CPU tensor, got ", w.device());
  TORCH_CHECK(t.dim() == 4, fn, ": ", tname, " must be 4-D [N, c, H, W], got ", t.dim(), "-D ", t.sizes());
  check_dtype(fn, t, tname);
  TORCH_CHECK(w.dim() == 3, fn, ": w must be 3-D [C_w, K, K], got ", w.dim(), "-D ", w.sizes());
  TORCH_CHECK(w.scalar_type() == at::kFloat, fn, ": w must be float32, got ", w.scalar_type());
  TORCH_CHECK(w.is_contiguous(), fn, ": w must be contiguous, got strides ", w.strides());
  const int64_t K = w.size(1);
  TORCH_CHECK(w.size(2) == K, fn, ": w must be square [C_w, K, K], got ", w.sizes());
  TORCH_CHECK(K % 2 == 1, fn, ": w's window K must be odd, got K=", K);
  TORCH_CHECK(k >= 1 && k % 2 == 1, fn, ": k must be odd and >= 1, got k=", k);
  TORCH_CHECK(k <= K, fn, ": k=", k, " exceeds w's window K=", K);
  TORCH_CHECK(stride == 1 || stride == 2, fn, ": stride must be 1 or 2, got stride=", stride);
  const int64_t c = t.size(1);
  TORCH_CHECK(c <= w.size(0), fn, ": ", tname, " has c=", c, " channels but w has only C_w=", w.size(0));
  return K;
}

int64_t out_size(int64_t in, int64_t k, int64_t s) { return (in + 2 * (k / 2) - k) / s + 1; }

at::MemoryFormat pick_format(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                                     : at::MemoryFormat::Contiguous;
}

}  // namespace

at::Tensor dwconv_forward_cpu(const at::Tensor& x_in, const at::Tensor& w, int64_t k, int64_t stride) {
  const int64_t K = check_common("dwconv_forward_cpu", x_in, "x", w, k, stride);
  const int64_t N = x_in.size(0), c = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(H >= 1 && W >= 1, "dwconv_forward_cpu: x's spatial size must be positive, got H=", H, " W=", W);
  const int64_t Ho = out_size(H, k, stride), Wo = out_size(W, k, stride);
  TORCH_CHECK(Ho > 0 && Wo > 0, "dwconv_forward_cpu: output size must be positive, got ", Ho, "x", Wo);
  const auto fmt = pick_format(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  at::Tensor out = at::empty({N, c, Ho, Wo}, x.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  DW_CALL(forward, x, w, K, k, stride, out, fmt == at::MemoryFormat::ChannelsLast);
  return out;
}

at::Tensor dwconv_backward_input_cpu(const at::Tensor& go_in, const at::Tensor& w, int64_t k, int64_t stride,
                                     int64_t H, int64_t W) {
  const int64_t K = check_common("dwconv_backward_input_cpu", go_in, "grad_out", w, k, stride);
  TORCH_CHECK(H >= 1 && W >= 1, "dwconv_backward_input_cpu: input size must be positive, got H=", H, " W=", W);
  const int64_t N = go_in.size(0), c = go_in.size(1);
  const int64_t Ho = out_size(H, k, stride), Wo = out_size(W, k, stride);
  TORCH_CHECK(go_in.size(2) == Ho && go_in.size(3) == Wo, "dwconv_backward_input_cpu: grad_out must be [N, c, ", Ho,
              ", ", Wo, "] for H=", H, " W=", W, " k=", k, " stride=", stride, ", got ", go_in.sizes());
  const auto fmt = pick_format(go_in);
  const at::Tensor go = go_in.contiguous(fmt);
  at::Tensor gi = at::empty({N, c, H, W}, go.options().memory_format(fmt));
  if (gi.numel() == 0) return gi;
  DW_CALL(backward_input, go, w, K, k, stride, H, W, gi, fmt == at::MemoryFormat::ChannelsLast);
  return gi;
}

at::Tensor dwconv_backward_weight_cpu(const at::Tensor& go_in, const at::Tensor& x_in, int64_t k, int64_t stride) {
  TORCH_CHECK(go_in.device().is_cpu(), "dwconv_backward_weight_cpu: grad_out must be a CPU tensor, got ",
              go_in.device());
  TORCH_CHECK(x_in.device().is_cpu(), "dwconv_backward_weight_cpu: x must be a CPU tensor, got ", x_in.device());
  TORCH_CHECK(x_in.dim() == 4, "dwconv_backward_weight_cpu: x must be 4-D [N, c, H, W], got ", x_in.sizes());
  TORCH_CHECK(go_in.dim() == 4, "dwconv_backward_weight_cpu: grad_out must be 4-D, got ", go_in.sizes());
  check_dtype("dwconv_backward_weight_cpu", x_in, "x");
  check_dtype("dwconv_backward_weight_cpu", go_in, "grad_out");
  TORCH_CHECK(go_in.scalar_type() == x_in.scalar_type(), "dwconv_backward_weight_cpu: grad_out dtype ",
              go_in.scalar_type(), " must match x dtype ", x_in.scalar_type());
  TORCH_CHECK(k >= 1 && k % 2 == 1, "dwconv_backward_weight_cpu: k must be odd and >= 1, got k=", k);
  TORCH_CHECK(stride == 1 || stride == 2, "dwconv_backward_weight_cpu: stride must be 1 or 2, got stride=", stride);
  const int64_t N = x_in.size(0), c = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(H >= 1 && W >= 1, "dwconv_backward_weight_cpu: x's spatial size must be positive, got H=", H, " W=", W);
  const int64_t Ho = out_size(H, k, stride), Wo = out_size(W, k, stride);
  TORCH_CHECK(go_in.size(0) == N && go_in.size(1) == c && go_in.size(2) == Ho && go_in.size(3) == Wo,
              "dwconv_backward_weight_cpu: grad_out must be [", N, ", ", c, ", ", Ho, ", ", Wo, "] for x ",
              x_in.sizes(), " k=", k, " stride=", stride, ", got ", go_in.sizes());
  at::Tensor gw = at::empty({c, k, k}, x_in.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous));
  if (gw.numel() == 0) return gw;
  if (N == 0) return gw.zero_();
  const auto fmt = pick_format(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  const at::Tensor go = go_in.contiguous(fmt);
  DW_CALL(backward_weight, go, x, k, stride, gw, fmt == at::MemoryFormat::ChannelsLast);
  return gw;
}

}  // namespace deps_fast

#else  // DEPS_FAST_DWCONV_CPU_KERNEL_PASS
// ================================================================================================================
// Kernel section: compiled once per instruction set, inside namespace deps_fast::dwcpu::{avx2,base}.
// ================================================================================================================

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));

static DW_INL v8 vld(const float* p) { return *reinterpret_cast<const v8u*>(p); }
static DW_INL void vst(float* p, v8 v) { *reinterpret_cast<v8u*>(p) = v; }
static DW_INL v8 vbc(float s) { return v8{s, s, s, s, s, s, s, s}; }
static DW_INL v8 vzero() { return v8{0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}; }
static DW_INL v8 vfma(v8 a, v8 b, v8 c) {
#ifdef DW_ISA_AVX2
  return (v8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}
// Fixed-order lane sum (part of the deterministic reduction).
// Optimisation barriers: keep GCC from hoisting the per-column weight broadcasts (and the row pointers) out of
// the column loop, which would spill them and turn every FMA into a stack load.
static DW_INL void reg_barrier(v8& v) {
#ifdef DW_ISA_AVX2
  __asm__("" : "+x"(v));
#else
  (void)v;  // 32-byte vectors do not fit one baseline register
#endif
}
static DW_INL void ptr_barrier(const float*& p) { __asm__("" : "+r"(p)); }
static DW_INL float vsum(v8 v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }

template <typename T>
static DW_INL float to_f(T v) {
  return static_cast<float>(v);
}

// ---- NCHW row kernel ---------------------------------------------------------------------------------------
// For r < nrows, m < 8 * nv:
//   out[r * out_pitch + m] = sum_{x < KH} ( sum_{y < KA} wa[x*KA + y] * A[x*pitch + m + y]
//                                          + sum_{y < KB} wb[x*KB + y] * A[x*pitch + boff + m + y] ),
//   with A = in + r * row_step.
// Stride 1 uses (k, k, 0); stride 2 uses the even/odd column split (k, (k+1)/2, k/2); the polyphase parts of
// grad_input use (|rows|, |cols|, 0). Template arguments < 0 mean "runtime".
// RB consecutive output rows of corr_plane at once (input rows advance by S padded rows per output row), one
// 8-lane column at a time. Per tap column y the KH weights sit in registers and every input vector loaded is
// used by all output rows it contributes to: ~0.5 loads per FMA instead of ~1.25, and RB independent chains.
template <int KH, int KA, int KB, int S, int RB>
static DW_INL void corr_rowblock(const float* __restrict src, int64_t pitch, int64_t boff, const float* __restrict wa,
                                 const float* __restrict wb, float* __restrict dst, int64_t out_pitch, int64_t nv) {
  constexpr int NRHO = S * (RB - 1) + KH;
  for (int64_t v = 0; v < nv; ++v) {
    v8 acc[RB];
#pragma GCC unroll 8
    for (int rr = 0; rr < RB; ++rr) acc[rr] = vzero();
    const float* s0 = src + v * 8;
#pragma GCC unroll 8
    for (int y = 0; y < KA; ++y) {
      v8 wc[KH];
#pragma GCC unroll 8
      for (int x = 0; x < KH; ++x) {
        wc[x] = vbc(wa[x * KA + y]);
        reg_barrier(wc[x]);
      }
      const float* rp = s0 + y;
#pragma GCC unroll 32
      for (int rho = 0; rho < NRHO; ++rho, rp += pitch) {
        ptr_barrier(rp);
        const v8 xv = vld(rp);
#pragma GCC unroll 8
        for (int rr = 0; rr < RB; ++rr) {
          const int x = rho - S * rr;
          if (x >= 0 && x < KH) acc[rr] = vfma(wc[x], xv, acc[rr]);
        }
      }
    }
#pragma GCC unroll 8
    for (int y = 0; y < KB; ++y) {
      v8 wc[KH];
#pragma GCC unroll 8
      for (int x = 0; x < KH; ++x) {
        wc[x] = vbc(wb[x * KB + y]);
        reg_barrier(wc[x]);
      }
      const float* rp = s0 + boff + y;
#pragma GCC unroll 32
      for (int rho = 0; rho < NRHO; ++rho, rp += pitch) {
        ptr_barrier(rp);
        const v8 xv = vld(rp);
#pragma GCC unroll 8
        for (int rr = 0; rr < RB; ++rr) {
          const int x = rho - S * rr;
          if (x >= 0 && x < KH) acc[rr] = vfma(wc[x], xv, acc[rr]);
        }
      }
    }
#pragma GCC unroll 8
    for (int rr = 0; rr < RB; ++rr) vst(dst + rr * out_pitch + v * 8, acc[rr]);
  }
}

template <int KH_, int KA_, int KB_>
static void corr_plane(const float* __restrict in, int64_t pitch, int64_t row_step, int64_t boff,
                       const float* __restrict wa, const float* __restrict wb, int kh, int ka, int kb,
                       float* __restrict out, int64_t out_pitch, int64_t nrows, int64_t nv) {
  const int KH = KH_ >= 0 ? KH_ : kh;
  const int KA = KA_ >= 0 ? KA_ : ka;
  const int KB = KB_ >= 0 ? KB_ : kb;
  int64_t r = 0;
  if constexpr (KH_ > 0 && KA_ > 0 && KB_ >= 0) {
    constexpr int RB = 6;
    if (row_step == pitch) {
      for (; r + RB <= nrows; r += RB)
        corr_rowblock<KH_, KA_, KB_, 1, RB>(in + r * row_step, pitch, boff, wa, wb, out + r * out_pitch, out_pitch, nv);
    } else if (row_step == 2 * pitch) {
      for (; r + RB <= nrows; r += RB)
        corr_rowblock<KH_, KA_, KB_, 2, RB>(in + r * row_step, pitch, boff, wa, wb, out + r * out_pitch, out_pitch, nv);
    }
  }
  for (; r < nrows; ++r) {
    const float* src = in + r * row_step;
    float* dst = out + r * out_pitch;
    int64_t v = 0;
    for (; v + 4 <= nv; v += 4) {
      v8 a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
      const float* s0 = src + v * 8;
#pragma GCC unroll 8
      for (int x = 0; x < KH; ++x) {
        const float* ra = s0 + x * pitch;
#pragma GCC unroll 8
        for (int y = 0; y < KA; ++y) {
          const v8 wv = vbc(wa[x * KA + y]);
          a0 = vfma(wv, vld(ra + y), a0);
          a1 = vfma(wv, vld(ra + 8 + y), a1);
          a2 = vfma(wv, vld(ra + 16 + y), a2);
          a3 = vfma(wv, vld(ra + 24 + y), a3);
        }
        const float* rb = ra + boff;
#pragma GCC unroll 8
        for (int y = 0; y < KB; ++y) {
          const v8 wv = vbc(wb[x * KB + y]);
          a0 = vfma(wv, vld(rb + y), a0);
          a1 = vfma(wv, vld(rb + 8 + y), a1);
          a2 = vfma(wv, vld(rb + 16 + y), a2);
          a3 = vfma(wv, vld(rb + 24 + y), a3);
        }
      }
      vst(dst + v * 8, a0);
      vst(dst + v * 8 + 8, a1);
      vst(dst + v * 8 + 16, a2);
      vst(dst + v * 8 + 24, a3);
    }
    for (; v + 2 <= nv; v += 2) {
      v8 a0 = vzero(), a1 = vzero();
      const float* s0 = src + v * 8;
#pragma GCC unroll 8
      for (int x = 0; x < KH; ++x) {
        const float* ra = s0 + x * pitch;
#pragma GCC unroll 8
        for (int y = 0; y < KA; ++y) {
          const v8 wv = vbc(wa[x * KA + y]);
          a0 = vfma(wv, vld(ra + y), a0);
          a1 = vfma(wv, vld(ra + 8 + y), a1);
        }
        const float* rb = ra + boff;
#pragma GCC unroll 8
        for (int y = 0; y < KB; ++y) {
          const v8 wv = vbc(wb[x * KB + y]);
          a0 = vfma(wv, vld(rb + y), a0);
          a1 = vfma(wv, vld(rb + 8 + y), a1);
        }
      }
      vst(dst + v * 8, a0);
      vst(dst + v * 8 + 8, a1);
    }
    for (; v < nv; ++v) {
      // Two partial chains (even / odd tap rows) to halve the dependency chain.
      v8 a0 = vzero(), a1 = vzero();
      const float* s0 = src + v * 8;
#pragma GCC unroll 8
      for (int x = 0; x < KH; ++x) {
        const float* ra = s0 + x * pitch;
        v8 acc = (x & 1) ? a1 : a0;
#pragma GCC unroll 8
        for (int y = 0; y < KA; ++y) acc = vfma(vbc(wa[x * KA + y]), vld(ra + y), acc);
        const float* rb = ra + boff;
#pragma GCC unroll 8
        for (int y = 0; y < KB; ++y) acc = vfma(vbc(wb[x * KB + y]), vld(rb + y), acc);
        if (x & 1)
          a1 = acc;
        else
          a0 = acc;
      }
      vst(dst + v * 8, a0 + a1);
    }
  }
}

using corr_fn = void (*)(const float*, int64_t, int64_t, int64_t, const float*, const float*, int, int, int, float*,
                         int64_t, int64_t, int64_t);

static corr_fn pick_corr(int kh, int ka, int kb) {
#define DW_CORR_CASE(a, b, c) \
  if (kh == a && ka == b && kb == c) return &corr_plane<a, b, c>;
  // forward / grad_input stride 1
  DW_CORR_CASE(1, 1, 0)
  DW_CORR_CASE(3, 3, 0)
  DW_CORR_CASE(5, 5, 0)
  DW_CORR_CASE(7, 7, 0)
  // forward stride 2 (even / odd columns)
  DW_CORR_CASE(3, 2, 1)
  DW_CORR_CASE(5, 3, 2)
  DW_CORR_CASE(7, 4, 3)
  // grad_input stride 2 polyphase parts
  DW_CORR_CASE(1, 2, 0)
  DW_CORR_CASE(2, 1, 0)
  DW_CORR_CASE(2, 2, 0)
  DW_CORR_CASE(2, 3, 0)
  DW_CORR_CASE(3, 2, 0)
  DW_CORR_CASE(3, 4, 0)
  DW_CORR_CASE(4, 3, 0)
  DW_CORR_CASE(4, 4, 0)
#undef DW_CORR_CASE
  return &corr_plane<-1, -1, -1>;
}

// Staging geometry of a zero-padded float plane for the row kernel.
struct PadPlane {
  int64_t pitch = 0;     // floats per padded row
  int64_t half = 0;      // stride 2: offset of the odd columns inside a row
  int64_t rows = 0;      // padded rows
  int64_t row_step = 0;  // input advance per output row
  int KA = 0, KB = 0;

  // Input Hi x Wi padded by p on every side, read by an output of Wo columns (nv vectors) at stride s.
  void init(int64_t Hi, int64_t Wi, int64_t nv, int k, int s) {
    const int p = k / 2;
    const int64_t Wp = Wi + 2 * p;
    rows = Hi + 2 * p;
    if (s == 1) {
      pitch = std::max<int64_t>(Wp, nv * 8 + k - 1);
      half = 0;
      row_step = pitch;
      KA = k;
      KB = 0;
    } else {
      half = std::max<int64_t>((Wp + 1) / 2, nv * 8 + p);
      pitch = 2 * half;
      row_step = 2 * pitch;
      KA = (k + 1) / 2;
      KB = k / 2;
    }
  }
  size_t size() const { return static_cast<size_t>(rows * pitch + 8); }

  // Writes plane src (Hi x Wi) into buf (whose padding is already zero).
  template <typename scalar_t>
  void fill(float* buf, const scalar_t* src, int64_t Hi, int64_t Wi, int p, int s) const {
    for (int64_t h = 0; h < Hi; ++h) {
      float* row = buf + (h + p) * pitch;
      const scalar_t* sr = src + h * Wi;
      if (s == 1) {
        float* d = row + p;
        for (int64_t w = 0; w < Wi; ++w) d[w] = to_f(sr[w]);
      } else {
        // padded column cidx = w + p goes to (cidx & 1) * half + cidx / 2
        const int64_t w_even = p & 1;  // first w with w + p even
        float* de = row + (w_even + p) / 2;
        for (int64_t w = w_even, m = 0; w < Wi; w += 2, ++m) de[m] = to_f(sr[w]);
        const int64_t w_odd = 1 - w_even;
        float* dd = row + half + (w_odd + p) / 2;
        for (int64_t w = w_odd, m = 0; w < Wi; w += 2, ++m) dd[m] = to_f(sr[w]);
      }
    }
  }
};

// NCHW forward (flip = false) and grad_input at stride 1 (flip = true: the rotated window, same geometry).
template <typename scalar_t>
static void conv_nchw(const scalar_t* in, const float* w, int64_t K, int64_t planes, int64_t C, int64_t Hi,
                      int64_t Wi, int64_t Ho, int64_t Wo, int k, int s, bool flip, scalar_t* out) {
  const int p = k / 2;
  const int64_t off = (K - k) / 2;
  const int64_t nv = (Wo + 7) / 8;
  PadPlane pp;
  pp.init(Hi, Wi, nv, k, s);
  const corr_fn fn = pick_corr(k, pp.KA, pp.KB);
  at::parallel_for(0, planes, 1, [&](int64_t b, int64_t e) {
    std::vector<float> pad(pp.size(), 0.f), ob(static_cast<size_t>(Ho * nv * 8 + 8));
    std::vector<float> wa(static_cast<size_t>(k * k) + 1), wb(static_cast<size_t>(k * k) + 1);
    for (int64_t t = b; t < e; ++t) {
      const int64_t ch = t % C;
      const float* wc = w + (ch * K + off) * K + off;
      for (int x = 0; x < k; ++x)
        for (int y = 0; y < k; ++y) {
          const float val = flip ? wc[(k - 1 - x) * K + (k - 1 - y)] : wc[x * K + y];
          if (s == 1)
            wa[x * k + y] = val;
          else if ((y & 1) == 0)
            wa[x * pp.KA + y / 2] = val;
          else
            wb[x * pp.KB + y / 2] = val;
        }
      pp.fill(pad.data(), in + t * Hi * Wi, Hi, Wi, p, s);
      fn(pad.data(), pp.pitch, pp.row_step, pp.half, wa.data(), wb.data(), k, pp.KA, pp.KB, ob.data(), nv * 8, Ho,
         nv);
      scalar_t* dst = out + t * Ho * Wo;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const float* o = ob.data() + oh * nv * 8;
        scalar_t* d = dst + oh * Wo;
        for (int64_t ow = 0; ow < Wo; ++ow) d[ow] = static_cast<scalar_t>(o[ow]);
      }
    }
  });
}

// One parity class of the stride-2 transposed convolution along one axis: outputs 2r + a (r < n) receive taps
// i = imax, imax - 2, ..., >= 0 (cnt of them) from padded grad_out index r + e0 + x (x = 0 .. cnt - 1).
struct Phase {
  int imax = -1, cnt = 0;
  int64_t e0 = 0, n = 0;
  void init(int a, int k, int64_t len) {
    const int p = k / 2;
    imax = (k - 1) - ((p - a) & 1);
    cnt = imax >= 0 ? imax / 2 + 1 : 0;
    e0 = imax >= 0 ? (a + p - imax) / 2 + p : 0;
    n = (len - a + 1) / 2;
  }
};

// NCHW grad_input at stride 2: four dense polyphase correlations on the zero-padded grad_out plane.
template <typename scalar_t>
static void bwi_nchw_s2(const scalar_t* go, const float* w, int64_t K, int64_t planes, int64_t C, int64_t H,
                        int64_t W, int64_t Ho, int64_t Wo, int k, scalar_t* gi) {
  const int p = k / 2;
  const int64_t off = (K - k) / 2;
  Phase ph[2], pw[2];
  int64_t rows = p + Ho, pitch = p + Wo, nvmax = 1, nrmax = 1;
  for (int a = 0; a < 2; ++a) {
    ph[a].init(a, k, H);
    pw[a].init(a, k, W);
    if (ph[a].cnt > 0 && ph[a].n > 0) rows = std::max<int64_t>(rows, ph[a].n - 1 + ph[a].e0 + ph[a].cnt);
    const int64_t nvq = (pw[a].n + 7) / 8;
    if (pw[a].cnt > 0 && pw[a].n > 0) pitch = std::max<int64_t>(pitch, nvq * 8 - 1 + pw[a].e0 + pw[a].cnt);
    nvmax = std::max<int64_t>(nvmax, nvq);
    nrmax = std::max<int64_t>(nrmax, ph[a].n);
  }
  const size_t pad_size = static_cast<size_t>(rows * pitch + 8);
  at::parallel_for(0, planes, 1, [&](int64_t b, int64_t e) {
    std::vector<float> pad(pad_size, 0.f), ws(static_cast<size_t>(k * k) + 1);
    std::vector<float> ob[2] = {std::vector<float>(static_cast<size_t>(nrmax * nvmax * 8 + 8)),
                                std::vector<float>(static_cast<size_t>(nrmax * nvmax * 8 + 8))};
    for (int64_t t = b; t < e; ++t) {
      const int64_t ch = t % C;
      const float* wc = w + (ch * K + off) * K + off;
      const scalar_t* src = go + t * Ho * Wo;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        float* d = pad.data() + (oh + p) * pitch + p;
        const scalar_t* sr = src + oh * Wo;
        for (int64_t ow = 0; ow < Wo; ++ow) d[ow] = to_f(sr[ow]);
      }
      scalar_t* dst = gi + t * H * W;
      for (int a = 0; a < 2; ++a) {
        const Phase& R = ph[a];
        if (R.n == 0) continue;
        for (int q = 0; q < 2; ++q) {
          const Phase& Q = pw[q];
          if (Q.n == 0) continue;
          const int64_t nvq = (Q.n + 7) / 8;
          const int64_t ld = nvq * 8;
          float* o = ob[q].data();
          if (R.cnt == 0 || Q.cnt == 0) {
            std::fill(o, o + R.n * ld, 0.f);
          } else {
            for (int x = 0; x < R.cnt; ++x)
              for (int y = 0; y < Q.cnt; ++y) ws[x * Q.cnt + y] = wc[(R.imax - 2 * x) * K + (Q.imax - 2 * y)];
            const corr_fn fn = pick_corr(R.cnt, Q.cnt, 0);
            fn(pad.data() + R.e0 * pitch + Q.e0, pitch, pitch, 0, ws.data(), ws.data(), R.cnt, Q.cnt, 0, o, ld, R.n,
               nvq);
          }
        }
        for (int64_t r = 0; r < R.n; ++r) {
          scalar_t* drow = dst + (2 * r + a) * W;
          for (int q = 0; q < 2; ++q) {
            const int64_t ld = (pw[q].n + 7) / 8 * 8;
            const float* o = ob[q].data() + r * ld;
            for (int64_t m = 0; m < pw[q].n; ++m) drow[2 * m + q] = static_cast<scalar_t>(o[m]);
          }
        }
      }
    }
  });
}

// KT dot products sum_{r, m} g[r*gp + m] * X[r*xs + y + m], y < KT, over rows r < rows and m < 8 * nv.
template <int KT>
static void dot_taps(const float* __restrict g, int64_t gp, const float* __restrict xb, int64_t xs, int64_t rows,
                     int64_t nv, float* res) {
  v8 acc[KT];
#pragma GCC unroll 8
  for (int y = 0; y < KT; ++y) acc[y] = vzero();
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = g + r * gp;
    const float* xr = xb + r * xs;
    for (int64_t v = 0; v < nv; ++v) {
      const v8 gv = vld(gr + v * 8);
#pragma GCC unroll 8
      for (int y = 0; y < KT; ++y) acc[y] = vfma(gv, vld(xr + v * 8 + y), acc[y]);
    }
  }
#pragma GCC unroll 8
  for (int y = 0; y < KT; ++y) res[y] = vsum(acc[y]);
}

static void dot_taps_rt(int kt, const float* g, int64_t gp, const float* xb, int64_t xs, int64_t rows, int64_t nv,
                        float* res) {
  switch (kt) {
    case 0: return;
    case 1: return dot_taps<1>(g, gp, xb, xs, rows, nv, res);
    case 2: return dot_taps<2>(g, gp, xb, xs, rows, nv, res);
    case 3: return dot_taps<3>(g, gp, xb, xs, rows, nv, res);
    case 4: return dot_taps<4>(g, gp, xb, xs, rows, nv, res);
    case 5: return dot_taps<5>(g, gp, xb, xs, rows, nv, res);
    case 6: return dot_taps<6>(g, gp, xb, xs, rows, nv, res);
    case 7: return dot_taps<7>(g, gp, xb, xs, rows, nv, res);
    default:
      for (int y = 0; y < kt; y += 4) {
        const int n = std::min(4, kt - y);
        dot_taps_rt(n, g, gp, xb + y, xs, rows, nv, res + y);
      }
  }
}

// NCHW grad_weight: per (n, ch) plane partial [k*k] into part, then the fixed-order sum over n.
template <typename scalar_t>
static void bww_nchw(const scalar_t* go, const scalar_t* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t Ho,
                     int64_t Wo, int k, int s, float* gw) {
  const int p = k / 2;
  const int kk = k * k;
  const int64_t nv = (Wo + 7) / 8;
  const int64_t gp = nv * 8;
  PadPlane pp;
  pp.init(H, W, nv, k, s);
  std::vector<float> part(static_cast<size_t>(N * C * kk));
  at::parallel_for(0, N * C, 1, [&](int64_t b, int64_t e) {
    std::vector<float> pad(pp.size(), 0.f), gb(static_cast<size_t>(Ho * gp + 8), 0.f);
    for (int64_t t = b; t < e; ++t) {
      pp.fill(pad.data(), x + t * H * W, H, W, p, s);
      const scalar_t* src = go + t * Ho * Wo;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        float* d = gb.data() + oh * gp;
        const scalar_t* sr = src + oh * Wo;
        for (int64_t ow = 0; ow < Wo; ++ow) d[ow] = to_f(sr[ow]);
      }
      float* res = part.data() + t * kk;
      float tmp[64];
      std::vector<float> tmpv;
      float* tb = tmp;
      if (k > 64) {
        tmpv.resize(static_cast<size_t>(k));
        tb = tmpv.data();
      }
      for (int i = 0; i < k; ++i) {
        const float* rowb = pad.data() + i * pp.pitch;
        if (s == 1) {
          dot_taps_rt(k, gb.data(), gp, rowb, pp.row_step, Ho, nv, res + i * k);
        } else {
          dot_taps_rt(pp.KA, gb.data(), gp, rowb, pp.row_step, Ho, nv, tb);
          for (int y = 0; y < pp.KA; ++y) res[i * k + 2 * y] = tb[y];
          dot_taps_rt(pp.KB, gb.data(), gp, rowb + pp.half, pp.row_step, Ho, nv, tb);
          for (int y = 0; y < pp.KB; ++y) res[i * k + 2 * y + 1] = tb[y];
        }
      }
    }
  });
  at::parallel_for(0, C, 16, [&](int64_t b, int64_t e) {
    for (int64_t ch = b; ch < e; ++ch)
      for (int t = 0; t < kk; ++t) {
        float acc = 0.f;
        for (int64_t n = 0; n < N; ++n) acc += part[static_cast<size_t>((n * C + ch) * kk + t)];
        gw[ch * kk + t] = acc;
      }
  });
}

// ---- channels_last ----------------------------------------------------------------------------------------
// Rows hold pixels of cp floats (cp % 8 == 0). wt is the [k*k][cp] tap table.

// One pixel with the valid taps i in [ilo, ihi), j in [jlo, jhi); xbase = pixel index of tap j = 0.
static DW_INL void cl_pixel(const float* const* R, int ilo, int ihi, int jlo, int jhi, const float* wt, int64_t cp,
                            int k, int64_t xbase, float* o) {
  const int64_t nvc = cp / 8;
  int64_t v = 0;
  for (; v + 4 <= nvc; v += 4) {
    v8 a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
    for (int i = ilo; i < ihi; ++i)
      for (int j = jlo; j < jhi; ++j) {
        const float* wp = wt + (static_cast<int64_t>(i) * k + j) * cp + v * 8;
        const float* xp = R[i] + (xbase + j) * cp + v * 8;
        a0 = vfma(vld(wp), vld(xp), a0);
        a1 = vfma(vld(wp + 8), vld(xp + 8), a1);
        a2 = vfma(vld(wp + 16), vld(xp + 16), a2);
        a3 = vfma(vld(wp + 24), vld(xp + 24), a3);
      }
    vst(o + v * 8, a0);
    vst(o + v * 8 + 8, a1);
    vst(o + v * 8 + 16, a2);
    vst(o + v * 8 + 24, a3);
  }
  for (; v < nvc; ++v) {
    v8 a0 = vzero();
    for (int i = ilo; i < ihi; ++i)
      for (int j = jlo; j < jhi; ++j)
        a0 = vfma(vld(wt + (static_cast<int64_t>(i) * k + j) * cp + v * 8), vld(R[i] + (xbase + j) * cp + v * 8), a0);
    vst(o + v * 8, a0);
  }
}

// One output row: R[i] (i in [ilo, ihi)) are the input rows of the valid tap rows.
template <int K_, int S_>
static void cl_row(const float* const* R, int ilo, int ihi, const float* __restrict wt, int64_t cp, int kr, int sr,
                   int64_t Wi, int64_t Wo, float* __restrict orow) {
  const int K = K_ > 0 ? K_ : kr;
  const int S = S_ > 0 ? S_ : sr;
  const int p = K / 2;
  const int64_t nvc = cp / 8;
  int64_t ow_a = std::min<int64_t>(Wo, (p + S - 1) / S);
  const int64_t lim = Wi - K + p;
  int64_t ow_b = lim >= 0 ? std::min<int64_t>(Wo, lim / S + 1) : 0;
  if (ow_b < ow_a) ow_b = ow_a;
  auto border = [&](int64_t ow) {
    const int64_t base = ow * S - p;
    const int jlo = static_cast<int>(std::max<int64_t>(0, -base));
    const int jhi = static_cast<int>(std::min<int64_t>(K, Wi - base));
    cl_pixel(R, ilo, ihi, jlo, std::max(jlo, jhi), wt, cp, K, base, orow + ow * cp);
  };
  int64_t ow = 0;
  for (; ow < ow_a; ++ow) border(ow);
  for (; ow + 4 <= ow_b; ow += 4) {
    const int64_t base = ow * S - p;
    int64_t v = 0;
    for (; v + 2 <= nvc; v += 2) {
      v8 a00 = vzero(), a01 = vzero(), a10 = vzero(), a11 = vzero();
      v8 a20 = vzero(), a21 = vzero(), a30 = vzero(), a31 = vzero();
      for (int i = ilo; i < ihi; ++i) {
        const float* xr = R[i] + base * cp + v * 8;
        const float* wr = wt + static_cast<int64_t>(i) * K * cp + v * 8;
#pragma GCC unroll 8
        for (int j = 0; j < K; ++j) {
          const v8 w0 = vld(wr + j * cp), w1 = vld(wr + j * cp + 8);
          const float* xp = xr + j * cp;
          a00 = vfma(w0, vld(xp), a00);
          a01 = vfma(w1, vld(xp + 8), a01);
          xp += S * cp;
          a10 = vfma(w0, vld(xp), a10);
          a11 = vfma(w1, vld(xp + 8), a11);
          xp += S * cp;
          a20 = vfma(w0, vld(xp), a20);
          a21 = vfma(w1, vld(xp + 8), a21);
          xp += S * cp;
          a30 = vfma(w0, vld(xp), a30);
          a31 = vfma(w1, vld(xp + 8), a31);
        }
      }
      float* o = orow + ow * cp + v * 8;
      vst(o, a00);
      vst(o + 8, a01);
      vst(o + cp, a10);
      vst(o + cp + 8, a11);
      vst(o + 2 * cp, a20);
      vst(o + 2 * cp + 8, a21);
      vst(o + 3 * cp, a30);
      vst(o + 3 * cp + 8, a31);
    }
    if (v < nvc) {
      v8 a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
      for (int i = ilo; i < ihi; ++i) {
        const float* xr = R[i] + base * cp + v * 8;
        const float* wr = wt + static_cast<int64_t>(i) * K * cp + v * 8;
#pragma GCC unroll 8
        for (int j = 0; j < K; ++j) {
          const v8 w0 = vld(wr + j * cp);
          const float* xp = xr + j * cp;
          a0 = vfma(w0, vld(xp), a0);
          a1 = vfma(w0, vld(xp + S * cp), a1);
          a2 = vfma(w0, vld(xp + 2 * S * cp), a2);
          a3 = vfma(w0, vld(xp + 3 * S * cp), a3);
        }
      }
      float* o = orow + ow * cp + v * 8;
      vst(o, a0);
      vst(o + cp, a1);
      vst(o + 2 * cp, a2);
      vst(o + 3 * cp, a3);
    }
  }
  for (; ow < Wo; ++ow) border(ow);
}

using cl_row_fn = void (*)(const float* const*, int, int, const float*, int64_t, int, int, int64_t, int64_t, float*);

static cl_row_fn pick_cl_row(int k, int s) {
#define DW_CL_CASE(a, b) \
  if (k == a && s == b) return &cl_row<a, b>;
  DW_CL_CASE(1, 1)
  DW_CL_CASE(3, 1)
  DW_CL_CASE(5, 1)
  DW_CL_CASE(7, 1)
  DW_CL_CASE(1, 2)
  DW_CL_CASE(3, 2)
  DW_CL_CASE(5, 2)
  DW_CL_CASE(7, 2)
#undef DW_CL_CASE
  return &cl_row<-1, -1>;
}

// [k*k][cp] float table of the used window (flip: rotated by 180 degrees), zero in the padded channels.
static std::vector<float> tap_table(const float* w, int64_t K, int64_t C, int64_t cp, int k, bool flip) {
  const int64_t off = (K - k) / 2;
  std::vector<float> wt(static_cast<size_t>(k * k * cp + 8), 0.f);
  for (int64_t ch = 0; ch < C; ++ch) {
    const float* wc = w + (ch * K + off) * K + off;
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j) {
        const float val = flip ? wc[(k - 1 - i) * K + (k - 1 - j)] : wc[i * K + j];
        wt[static_cast<size_t>((i * k + j) * cp + ch)] = val;
      }
  }
  return wt;
}

// Ring of k float rows (pixel pitch cp) caching converted input rows, keyed by (n * Hi + ih).
struct RowRing {
  std::vector<float> buf;
  std::vector<int64_t> tag;
  int64_t row_len = 0;
  int slots = 0;
  void init(int k, int64_t Wi, int64_t cp) {
    slots = k;
    row_len = Wi * cp;
    buf.assign(static_cast<size_t>(k * row_len + 8), 0.f);
    tag.assign(static_cast<size_t>(k), -1);
  }
  // Row (n, ih) of a channels_last tensor src [*, Hi, Wi, C]; channels [c0, c0 + cn) land at 0 .. cn - 1.
  template <typename scalar_t>
  const float* get(const scalar_t* src, int64_t n, int64_t ih, int64_t Hi, int64_t Wi, int64_t C, int64_t c0,
                   int64_t cn, int64_t cp) {
    const int64_t key = n * Hi + ih;
    const int slot = static_cast<int>(ih % slots);
    float* d = buf.data() + slot * row_len;
    if (tag[slot] != key) {
      const scalar_t* s = src + key * Wi * C + c0;
      for (int64_t w = 0; w < Wi; ++w) {
        const scalar_t* sp = s + w * C;
        float* dp = d + w * cp;
        for (int64_t ch = 0; ch < cn; ++ch) dp[ch] = to_f(sp[ch]);
      }
      tag[slot] = key;
    }
    return d;
  }
};

// channels_last forward (flip = false) and grad_input at stride 1 (flip = true, Hi = Ho, Wi = Wo).
template <typename scalar_t>
static void conv_cl(const scalar_t* in, const float* w, int64_t K, int64_t N, int64_t C, int64_t Hi, int64_t Wi,
                    int64_t Ho, int64_t Wo, int k, int s, bool flip, scalar_t* out) {
  const int p = k / 2;
  const bool direct = std::is_same<scalar_t, float>::value && C % 8 == 0;
  const int64_t cp = round8(C);
  const std::vector<float> wt = tap_table(w, K, C, cp, k, flip);
  const cl_row_fn fn = pick_cl_row(k, s);
  at::parallel_for(0, N * Ho, 1, [&](int64_t b, int64_t e) {
    RowRing ring;
    std::vector<float> ob;
    if (!direct) {
      ring.init(k, Wi, cp);
      ob.assign(static_cast<size_t>(Wo * cp + 8), 0.f);
    }
    std::vector<const float*> R(static_cast<size_t>(k), nullptr);
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / Ho, oh = t % Ho;
      const int64_t top = oh * s - p;
      const int ilo = static_cast<int>(std::max<int64_t>(0, -top));
      const int ihi = static_cast<int>(std::min<int64_t>(k, Hi - top));
      for (int i = ilo; i < ihi; ++i) {
        const int64_t ih = top + i;
        R[i] = direct ? reinterpret_cast<const float*>(in) + (n * Hi + ih) * Wi * C
                      : ring.get(in, n, ih, Hi, Wi, C, 0, C, cp);
      }
      float* orow = direct ? reinterpret_cast<float*>(out) + t * Wo * C : ob.data();
      fn(R.data(), ilo, std::max(ilo, ihi), wt.data(), cp, k, s, Wi, Wo, orow);
      if (!direct) {
        scalar_t* d = out + t * Wo * C;
        for (int64_t ow = 0; ow < Wo; ++ow)
          for (int64_t ch = 0; ch < C; ++ch) d[ow * C + ch] = static_cast<scalar_t>(ob[ow * cp + ch]);
      }
    }
  });
}

// channels_last grad_input at stride 2: per input row, each pixel gathers its (parity-matched) taps.
template <typename scalar_t>
static void bwi_cl_s2(const scalar_t* go, const float* w, int64_t K, int64_t N, int64_t C, int64_t H, int64_t W,
                      int64_t Ho, int64_t Wo, int k, scalar_t* gi) {
  const int p = k / 2;
  const bool direct = std::is_same<scalar_t, float>::value && C % 8 == 0;
  const int64_t cp = round8(C);
  const int64_t nvc = cp / 8;
  const std::vector<float> wt = tap_table(w, K, C, cp, k, false);
  at::parallel_for(0, N * H, 1, [&](int64_t b, int64_t e) {
    RowRing ring;
    std::vector<float> ob;
    if (!direct) {
      ring.init(k, Wo, cp);
      ob.assign(static_cast<size_t>(W * cp + 8), 0.f);
    }
    std::vector<const float*> G(static_cast<size_t>(k), nullptr);
    std::vector<const float*> tw(static_cast<size_t>(k * k)), tx(static_cast<size_t>(k * k));
    std::vector<int> ilist(static_cast<size_t>(k));
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / H, ih = t % H;
      int ni = 0;
      for (int i = (ih + p) & 1; i < k; i += 2) {
        const int64_t oh = (ih + p - i) / 2;
        if (oh < 0 || oh >= Ho) continue;
        ilist[ni++] = i;
        G[i] = direct ? reinterpret_cast<const float*>(go) + (n * Ho + oh) * Wo * C
                      : ring.get(go, n, oh, Ho, Wo, C, 0, C, cp);
      }
      float* orow = direct ? reinterpret_cast<float*>(gi) + t * W * C : ob.data();
      for (int64_t iw = 0; iw < W; ++iw) {
        int nt = 0;
        const int64_t jmin = std::max<int64_t>(0, iw + p - 2 * (Wo - 1));
        const int64_t jmax = std::min<int64_t>(k - 1, iw + p);
        int64_t j0 = jmin + ((jmin - (iw + p)) & 1);
        for (int a = 0; a < ni; ++a) {
          const int i = ilist[a];
          for (int64_t j = j0; j <= jmax; j += 2) {
            tw[nt] = wt.data() + (i * k + j) * cp;
            tx[nt] = G[i] + ((iw + p - j) / 2) * cp;
            ++nt;
          }
        }
        float* o = orow + iw * cp;
        int64_t v = 0;
        for (; v + 4 <= nvc; v += 4) {
          v8 a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
          for (int q = 0; q < nt; ++q) {
            const float* wp = tw[q] + v * 8;
            const float* xp = tx[q] + v * 8;
            a0 = vfma(vld(wp), vld(xp), a0);
            a1 = vfma(vld(wp + 8), vld(xp + 8), a1);
            a2 = vfma(vld(wp + 16), vld(xp + 16), a2);
            a3 = vfma(vld(wp + 24), vld(xp + 24), a3);
          }
          vst(o + v * 8, a0);
          vst(o + v * 8 + 8, a1);
          vst(o + v * 8 + 16, a2);
          vst(o + v * 8 + 24, a3);
        }
        for (; v < nvc; ++v) {
          v8 a0 = vzero();
          for (int q = 0; q < nt; ++q) a0 = vfma(vld(tw[q] + v * 8), vld(tx[q] + v * 8), a0);
          vst(o + v * 8, a0);
        }
      }
      if (!direct) {
        scalar_t* d = gi + t * W * C;
        for (int64_t iw = 0; iw < W; ++iw)
          for (int64_t ch = 0; ch < C; ++ch) d[iw * C + ch] = static_cast<scalar_t>(ob[iw * cp + ch]);
      }
    }
  });
}

// channels_last grad_weight: (row chunk) x (64-channel group) tasks, partials summed over chunks in order.
template <typename scalar_t>
static void bww_cl(const scalar_t* go, const scalar_t* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t Ho,
                   int64_t Wo, int k, int s, float* gw) {
  const int p = k / 2;
  const int kk = k * k;
  const bool direct = std::is_same<scalar_t, float>::value && C % 8 == 0;
  const int64_t cp = round8(C);
  constexpr int64_t kGroup = 64;
  const int64_t G = (cp + kGroup - 1) / kGroup;
  const int64_t rows = N * Ho;
  // The partition depends on the shape only (never on the thread count): bitwise reproducible.
  const int64_t rows_per_chunk = (rows + 15) / 16;
  const int64_t R = (rows + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<float> part(static_cast<size_t>(R * kk * cp), 0.f);
  at::parallel_for(0, R * G, 1, [&](int64_t b, int64_t e) {
    RowRing ring;
    std::vector<float> gb;
    std::vector<const float*> X(static_cast<size_t>(k), nullptr);
    for (int64_t task = b; task < e; ++task) {
      const int64_t r = task / G, g = task % G;
      const int64_t c0 = g * kGroup;
      const int64_t gw8 = std::min<int64_t>(kGroup, cp - c0);  // channels of this group (multiple of 8)
      const int64_t cn = std::min<int64_t>(gw8, C - c0);      // real channels
      const int64_t nvg = gw8 / 8;
      // pixel pitch and base of the rows this task reads
      const int64_t pit = direct ? C : gw8;
      if (!direct) {
        ring.init(k, W, gw8);
        gb.assign(static_cast<size_t>(Wo * gw8 + 8), 0.f);
      }
      float* acc = part.data() + r * kk * cp;  // [kk][cp] slice of this chunk; this task owns [c0, c0 + gw8)
      const int64_t t0 = r * rows_per_chunk, t1 = std::min(rows, t0 + rows_per_chunk);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / Ho, oh = t % Ho;
        const float* grow;
        if (direct) {
          grow = reinterpret_cast<const float*>(go) + t * Wo * C + c0;
        } else {
          const scalar_t* sg = go + t * Wo * C + c0;
          for (int64_t ow = 0; ow < Wo; ++ow)
            for (int64_t ch = 0; ch < cn; ++ch) gb[ow * gw8 + ch] = to_f(sg[ow * C + ch]);
          grow = gb.data();
        }
        const int64_t top = oh * s - p;
        const int ilo = static_cast<int>(std::max<int64_t>(0, -top));
        const int ihi = static_cast<int>(std::min<int64_t>(k, H - top));
        for (int i = ilo; i < ihi; ++i) {
          const int64_t ih = top + i;
          X[i] = direct ? reinterpret_cast<const float*>(x) + (n * H + ih) * W * C + c0
                        : ring.get(x, n, ih, H, W, C, c0, cn, gw8);
        }
        for (int i = ilo; i < ihi; ++i) {
          for (int j = 0; j < k; ++j) {
            // ow with 0 <= ow * s - p + j < W
            const int64_t lo_num = p - j;
            const int64_t owlo = lo_num > 0 ? (lo_num + s - 1) / s : 0;
            const int64_t hi_num = W - 1 + p - j;
            const int64_t owhi = hi_num >= 0 ? std::min<int64_t>(Wo, hi_num / s + 1) : 0;
            if (owhi <= owlo) continue;
            float* a = acc + (i * k + j) * cp + c0;
            const float* xb = X[i] + (j - p) * pit;
            int64_t v = 0;
            for (; v + 4 <= nvg; v += 4) {
              v8 a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
              for (int64_t ow = owlo; ow < owhi; ++ow) {
                const float* gp = grow + ow * pit + v * 8;
                const float* xp = xb + ow * s * pit + v * 8;
                a0 = vfma(vld(gp), vld(xp), a0);
                a1 = vfma(vld(gp + 8), vld(xp + 8), a1);
                a2 = vfma(vld(gp + 16), vld(xp + 16), a2);
                a3 = vfma(vld(gp + 24), vld(xp + 24), a3);
              }
              vst(a + v * 8, vld(a + v * 8) + a0);
              vst(a + v * 8 + 8, vld(a + v * 8 + 8) + a1);
              vst(a + v * 8 + 16, vld(a + v * 8 + 16) + a2);
              vst(a + v * 8 + 24, vld(a + v * 8 + 24) + a3);
            }
            for (; v < nvg; ++v) {
              v8 a0 = vzero(), a1 = vzero();
              int64_t ow = owlo;
              for (; ow + 2 <= owhi; ow += 2) {
                a0 = vfma(vld(grow + ow * pit + v * 8), vld(xb + ow * s * pit + v * 8), a0);
                a1 = vfma(vld(grow + (ow + 1) * pit + v * 8), vld(xb + (ow + 1) * s * pit + v * 8), a1);
              }
              if (ow < owhi) a0 = vfma(vld(grow + ow * pit + v * 8), vld(xb + ow * s * pit + v * 8), a0);
              vst(a + v * 8, vld(a + v * 8) + (a0 + a1));
            }
          }
        }
      }
    }
  });
  at::parallel_for(0, C, 16, [&](int64_t b, int64_t e) {
    for (int64_t ch = b; ch < e; ++ch)
      for (int t = 0; t < kk; ++t) {
        float sum = 0.f;
        for (int64_t r = 0; r < R; ++r) sum += part[static_cast<size_t>((r * kk + t) * cp + ch)];
        gw[ch * kk + t] = sum;
      }
  });
}

// ---- per-ISA entry points (already validated, tensors contiguous in the chosen format) ---------------------

template <typename F>
static void dispatch_dtype(at::ScalarType st, const char* name, F&& f) {
  switch (st) {
    case at::kFloat: f(float{}); break;
    case at::kBFloat16: f(c10::BFloat16{}); break;
    case at::kHalf: f(c10::Half{}); break;
    default: TORCH_CHECK(false, name, ": unsupported dtype ", st);
  }
}

void forward(const at::Tensor& x, const at::Tensor& w, int64_t K, int64_t k, int64_t s, at::Tensor& out, bool cl) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Ho = out.size(2), Wo = out.size(3);
  const float* wp = w.data_ptr<float>();
  dispatch_dtype(x.scalar_type(), "dwconv_forward_cpu", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    if (cl)
      conv_cl<scalar_t>(xp, wp, K, N, C, H, W, Ho, Wo, static_cast<int>(k), static_cast<int>(s), false, op);
    else
      conv_nchw<scalar_t>(xp, wp, K, N * C, C, H, W, Ho, Wo, static_cast<int>(k), static_cast<int>(s), false, op);
  });
}

void backward_input(const at::Tensor& go, const at::Tensor& w, int64_t K, int64_t k, int64_t s, int64_t H, int64_t W,
                    at::Tensor& gi, bool cl) {
  const int64_t N = go.size(0), C = go.size(1), Ho = go.size(2), Wo = go.size(3);
  const float* wp = w.data_ptr<float>();
  const int ki = static_cast<int>(k);
  dispatch_dtype(go.scalar_type(), "dwconv_backward_input_cpu", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* gp = go.data_ptr<scalar_t>();
    scalar_t* ip = gi.data_ptr<scalar_t>();
    if (s == 1) {
      // stride 1: the correlation of grad_out with the rotated window (H' = H, W' = W)
      if (cl)
        conv_cl<scalar_t>(gp, wp, K, N, C, Ho, Wo, H, W, ki, 1, true, ip);
      else
        conv_nchw<scalar_t>(gp, wp, K, N * C, C, Ho, Wo, H, W, ki, 1, true, ip);
    } else {
      if (cl)
        bwi_cl_s2<scalar_t>(gp, wp, K, N, C, H, W, Ho, Wo, ki, ip);
      else
        bwi_nchw_s2<scalar_t>(gp, wp, K, N * C, C, H, W, Ho, Wo, ki, ip);
    }
  });
}

void backward_weight(const at::Tensor& go, const at::Tensor& x, int64_t k, int64_t s, at::Tensor& gw, bool cl) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Ho = go.size(2), Wo = go.size(3);
  float* out = gw.data_ptr<float>();
  dispatch_dtype(x.scalar_type(), "dwconv_backward_weight_cpu", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* gp = go.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    if (cl)
      bww_cl<scalar_t>(gp, xp, N, C, H, W, Ho, Wo, static_cast<int>(k), static_cast<int>(s), out);
    else
      bww_nchw<scalar_t>(gp, xp, N, C, H, W, Ho, Wo, static_cast<int>(k), static_cast<int>(s), out);
  });
}

#endif  // DEPS_FAST_DWCONV_CPU_KERNEL_PASS
