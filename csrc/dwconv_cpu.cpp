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
//  * NCHW planes of <= 64 pixels: one task per 8 channels of one image, staged channel-innermost into a small
//    zero-padded tile (the transposition happens while staging), so the vectors run over channels as in the
//    channels_last kernels, without a layout copy of the tensors.
//  * channels_last: one task per output row (n, oh); the inner dimension is the channel vector. The used
//    window is repacked once per call into a [k*k][c] float table (read from w in place; the parameter itself
//    is never copied or cropped). Interior pixels are done 4 at a time x 16 channels in registers; border
//    pixels use the valid tap range only. Low-precision (or c % 8 != 0) rows are widened into a small ring of
//    k float rows so each input row is converted once per task.
//  * grad_weight is deterministic: NCHW computes one [k*k] partial per (n, ch) plane and sums them over n in
//    order; channels_last splits rows into at most 16 chunks (a count fixed by the shape, not by the thread
//    count) x 64-channel groups, and sums the chunk partials in order. Lane sums use a fixed tree.
//  * The kernels live in dwconv_cpu_kernels.inc, which this file includes twice: once under GCC's AVX2+FMA
//    target pragma and once for baseline x86-64. The AVX2 copy is picked at run time when the CPU has it.

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
#define DEPS_FAST_DWCONV_CPU_KERNEL_PASS 1  // lets dwconv_cpu_kernels.inc check that it is included from here

#ifdef DEPS_FAST_DWCONV_MULTI
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define DW_ISA_AVX2 1
namespace deps_fast {
namespace dwcpu {
namespace avx2 {
#include "dwconv_cpu_kernels.inc"
}  // namespace avx2
}  // namespace dwcpu
}  // namespace deps_fast
#undef DW_ISA_AVX2
#pragma GCC pop_options
#endif

namespace deps_fast {
namespace dwcpu {
namespace base {
#include "dwconv_cpu_kernels.inc"
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

}  // namespace

// The checks (shared with the CUDA entry points) live in deps_fast.h.
at::Tensor dwconv_forward_cpu(const at::Tensor& x_in, const at::Tensor& w, int64_t k, int64_t stride) {
  const int64_t K = check_dw_forward("dwconv_forward_cpu", x_in, w, k, stride, at::kCPU);
  const int64_t N = x_in.size(0), c = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t Ho = dw_out_size(H, k, stride), Wo = dw_out_size(W, k, stride);
  const auto fmt = dw_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  at::Tensor out = at::empty({N, c, Ho, Wo}, x.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  DW_CALL(forward, x, w, K, k, stride, out, fmt == at::MemoryFormat::ChannelsLast);
  return out;
}

at::Tensor dwconv_backward_input_cpu(const at::Tensor& go_in, const at::Tensor& w, int64_t k, int64_t stride,
                                     int64_t H, int64_t W) {
  const int64_t K = check_dw_backward_input("dwconv_backward_input_cpu", go_in, w, k, stride, H, W, at::kCPU);
  const int64_t N = go_in.size(0), c = go_in.size(1);
  const auto fmt = dw_memory_format(go_in);
  const at::Tensor go = go_in.contiguous(fmt);
  at::Tensor gi = at::empty({N, c, H, W}, go.options().memory_format(fmt));
  if (gi.numel() == 0) return gi;
  DW_CALL(backward_input, go, w, K, k, stride, H, W, gi, fmt == at::MemoryFormat::ChannelsLast);
  return gi;
}

at::Tensor dwconv_backward_weight_cpu(const at::Tensor& go_in, const at::Tensor& x_in, int64_t k, int64_t stride) {
  check_dw_backward_weight("dwconv_backward_weight_cpu", go_in, x_in, k, stride, at::kCPU);
  const int64_t N = x_in.size(0), c = x_in.size(1);
  at::Tensor gw = at::empty({c, k, k}, x_in.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous));
  if (gw.numel() == 0) return gw;
  if (N == 0) return gw.zero_();
  const auto fmt = dw_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  const at::Tensor go = go_in.contiguous(fmt);
  DW_CALL(backward_weight, go, x, k, stride, gw, fmt == at::MemoryFormat::ChannelsLast);
  return gw;
}

}  // namespace deps_fast
