// Declarations of the kernels behind deps_fast._C. No autograd lives here: deps_fast/ops wires these into
// torch.library custom ops. Every function validates what the Python layer cannot express and raises with
// TORCH_CHECK naming the argument.
#pragma once
#include <ATen/core/Tensor.h>  // not torch/extension.h: that costs ~1 min of compile per file
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>

namespace deps_fast {

// ---- elastic depthwise convolution -------------------------------------------------------------------------
// x:      [N, c, H, W], float32 / bfloat16 / float16, NCHW-contiguous or channels_last (any other strides are
//         made contiguous). Accumulation is always float32.
// w:      [C_w, K, K] float32, contiguous, C_w >= c, K odd >= k. Only w[:c] and its center k x k window
//         (offset (K - k) / 2) are read: the shared supernet weight is used in place, never copied.
// k:      odd kernel size; padding is k / 2. stride: 1 or 2.
// Outputs keep x's memory format (channels_last in, channels_last out) and dtype.
at::Tensor dwconv_forward_cpu(const at::Tensor& x, const at::Tensor& w, int64_t k, int64_t stride);
// grad_out: [N, c, H', W']; H, W: the input's spatial size (ambiguous from H' at stride 2). Returns [N, c, H, W]
// in grad_out's memory format and dtype.
at::Tensor dwconv_backward_input_cpu(const at::Tensor& grad_out, const at::Tensor& w, int64_t k, int64_t stride,
                                     int64_t H, int64_t W);
// Returns the weight gradient of the used window only: [c, k, k] float32. Deterministic (fixed reduction order).
at::Tensor dwconv_backward_weight_cpu(const at::Tensor& grad_out, const at::Tensor& x, int64_t k, int64_t stride);

#ifdef DEPS_FAST_WITH_CUDA
at::Tensor dwconv_forward_cuda(const at::Tensor& x, const at::Tensor& w, int64_t k, int64_t stride);
at::Tensor dwconv_backward_input_cuda(const at::Tensor& grad_out, const at::Tensor& w, int64_t k, int64_t stride,
                                      int64_t H, int64_t W);
// deterministic=true: per-block float32 partials in a workspace, summed in a fixed order (bitwise reproducible);
// false: float32 atomicAdd into the result (order varies between runs).
at::Tensor dwconv_backward_weight_cuda(const at::Tensor& grad_out, const at::Tensor& x, int64_t k, int64_t stride,
                                       bool deterministic);
#endif

}  // namespace deps_fast
