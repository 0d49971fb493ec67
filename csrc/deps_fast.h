// Declarations of the kernels behind deps_fast._C. No autograd lives here: deps_fast/ops wires these into
// torch.library custom ops. Every function validates what the Python layer cannot express and raises with
// TORCH_CHECK naming the argument.
#pragma once
#include <ATen/core/Tensor.h>  // not torch/extension.h: that costs ~1 min of compile per file
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>

#include "static_switch.h"  // FLOAT_TYPE_SWITCH: the one dtype dispatch of every CPU and CUDA file

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

// Checks shared by the CPU and CUDA entry points above (one contract, one set of messages); `device` is the
// backend's device type. Each returns after the first failed TORCH_CHECK with a message naming fn and the argument.
inline int64_t dw_out_size(int64_t in, int64_t k, int64_t stride) { return (in + 2 * (k / 2) - k) / stride + 1; }

// Layout the kernels run in: channels_last stays channels_last, anything else is made NCHW-contiguous.
inline at::MemoryFormat dw_memory_format(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                                     : at::MemoryFormat::Contiguous;
}

inline void check_float_dtype(const char* fn, const char* name, const at::Tensor& t) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf, fn, ": ", name,
              " must be float32, bfloat16 or float16, got ", st);
}

// x or grad_out: defined, on `device`, 4-D, float32 / bfloat16 / float16.
inline void check_dw_activation(const char* fn, const char* name, const at::Tensor& t, at::DeviceType device) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined");
  TORCH_CHECK(t.device().type() == device, fn, ": ", name, " must be a ", c10::DeviceTypeName(device),
              " tensor, got device ", t.device());
  TORCH_CHECK(t.dim() == 4, fn, ": ", name, " must be 4-D [N, c, H, W], got ", t.dim(), "-D shape ", t.sizes());
  check_float_dtype(fn, name, t);
}

// w [C_w, K, K] float32 contiguous on the activation t's device, odd K >= k, k odd, stride 1 or 2, c <= C_w
// (c = t's channels). Returns K.
inline int64_t check_dw_weight(const char* fn, const at::Tensor& w, const at::Tensor& t, const char* tname,
                               int64_t k, int64_t stride) {
  TORCH_CHECK(w.defined(), fn, ": w is undefined");
  TORCH_CHECK(w.device() == t.device(), fn, ": w must be on ", tname, "'s device (", t.device(), "), got ",
              w.device());
  TORCH_CHECK(w.dim() == 3, fn, ": w must be 3-D [C_w, K, K], got ", w.dim(), "-D shape ", w.sizes());
  TORCH_CHECK(w.scalar_type() == at::kFloat, fn, ": w must be float32, got ", w.scalar_type());
  TORCH_CHECK(w.is_contiguous(), fn, ": w must be contiguous, got strides ", w.strides());
  const int64_t K = w.size(1);
  TORCH_CHECK(w.size(2) == K, fn, ": w must be square [C_w, K, K], got shape ", w.sizes());
  TORCH_CHECK(K % 2 == 1, fn, ": w's window K must be odd, got K=", K);
  TORCH_CHECK(k >= 1 && k % 2 == 1, fn, ": k must be odd and >= 1, got k=", k);
  TORCH_CHECK(k <= K, fn, ": k=", k, " exceeds w's window K=", K);
  TORCH_CHECK(stride == 1 || stride == 2, fn, ": stride must be 1 or 2, got stride=", stride);
  const int64_t c = t.size(1);
  TORCH_CHECK(c <= w.size(0), fn, ": ", tname, " has c=", c, " channels but w has only C_w=", w.size(0));
  return K;
}

// dwconv_forward_*: x and w as documented above, a positive output size. Returns K.
inline int64_t check_dw_forward(const char* fn, const at::Tensor& x, const at::Tensor& w, int64_t k, int64_t stride,
                                at::DeviceType device) {
  check_dw_activation(fn, "x", x, device);
  const int64_t K = check_dw_weight(fn, w, x, "x", k, stride);
  const int64_t H = x.size(2), W = x.size(3);
  TORCH_CHECK(H >= 1 && W >= 1, fn, ": x's spatial size must be positive, got H=", H, " W=", W);
  const int64_t Ho = dw_out_size(H, k, stride), Wo = dw_out_size(W, k, stride);
  TORCH_CHECK(Ho > 0 && Wo > 0, fn, ": output size must be positive, got ", Ho, "x", Wo);
  return K;
}

// dwconv_backward_input_*: grad_out [N, c, H', W'] for an input of H x W. Returns K.
inline int64_t check_dw_backward_input(const char* fn, const at::Tensor& grad_out, const at::Tensor& w, int64_t k,
                                       int64_t stride, int64_t H, int64_t W, at::DeviceType device) {
  check_dw_activation(fn, "grad_out", grad_out, device);
  const int64_t K = check_dw_weight(fn, w, grad_out, "grad_out", k, stride);
  TORCH_CHECK(H >= 1 && W >= 1, fn, ": input size must be positive, got H=", H, " W=", W);
  const int64_t Ho = dw_out_size(H, k, stride), Wo = dw_out_size(W, k, stride);
  TORCH_CHECK(grad_out.size(2) == Ho && grad_out.size(3) == Wo, fn, ": grad_out must be [N, c, ", Ho, ", ", Wo,
              "] for H=", H, " W=", W, " k=", k, " stride=", stride, ", got ", grad_out.sizes());
  return K;
}

// dwconv_backward_weight_*: x and grad_out of one dtype and device, grad_out shaped as x's output.
inline void check_dw_backward_weight(const char* fn, const at::Tensor& grad_out, const at::Tensor& x, int64_t k,
                                     int64_t stride, at::DeviceType device) {
  check_dw_activation(fn, "x", x, device);
  check_dw_activation(fn, "grad_out", grad_out, device);
  TORCH_CHECK(grad_out.device() == x.device(), fn, ": grad_out must be on x's device (", x.device(), "), got ",
              grad_out.device());
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), fn, ": grad_out dtype ", grad_out.scalar_type(),
              " must match x dtype ", x.scalar_type());
  TORCH_CHECK(k >= 1 && k % 2 == 1, fn, ": k must be odd and >= 1, got k=", k);
  TORCH_CHECK(stride == 1 || stride == 2, fn, ": stride must be 1 or 2, got stride=", stride);
  const int64_t N = x.size(0), c = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H >= 1 && W >= 1, fn, ": x's spatial size must be positive, got H=", H, " W=", W);
  const int64_t Ho = dw_out_size(H, k, stride), Wo = dw_out_size(W, k, stride);
  TORCH_CHECK(grad_out.size(0) == N && grad_out.size(1) == c && grad_out.size(2) == Ho && grad_out.size(3) == Wo, fn,
              ": grad_out must be [", N, ", ", c, ", ", Ho, ", ", Wo, "] for x ", x.sizes(), " k=", k,
              " stride=", stride, ", got ", grad_out.sizes());
}

// ---- fused elastic BatchNorm + activation ------------------------------------------------------------------
// x, grad_y: [N, c, H, W] float32 / bfloat16 / float16, NCHW or channels_last (other strides are made NCHW);
// grad_y is read in x's layout. scale, shift, mean, invstd, weight_c, sum_dz, sum_dz_xmu: float32 [c] contiguous.
// act: 0 none, 1 relu, 2 relu6, 3 hswish. Outputs keep x's dtype and memory format; accumulation is float32
// within cache-sized chunks and float64 across them. z = x * scale + shift, dz = grad_y * act'(z).
// (mean, biased variance) per channel over N, H, W.
std::tuple<at::Tensor, at::Tensor> bn_act_stats_cpu(const at::Tensor& x);
// act(x * scale + shift)
at::Tensor bn_act_forward_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift, int64_t act);
// (sum dz, sum dz * (x - mean)) per channel
std::tuple<at::Tensor, at::Tensor> bn_act_backward_reduce_cpu(const at::Tensor& grad_y, const at::Tensor& x,
                                                              const at::Tensor& scale, const at::Tensor& shift,
                                                              const at::Tensor& mean, int64_t act);
// training: weight_c * invstd * (dz - sum_dz / count - (x - mean) * invstd^2 * sum_dz_xmu / count); eval: dz * scale
at::Tensor bn_act_backward_input_cpu(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& scale,
                                     const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& invstd,
                                     const at::Tensor& weight_c, const at::Tensor& sum_dz,
                                     const at::Tensor& sum_dz_xmu, int64_t count, int64_t act, bool training);

// ---- fused distillation loss --------------------------------------------------------------------------------
// student, teacher: [B, V] logits, one floating dtype; target: int64 [B] (range checked by the Python layer).
// Returns (per-row loss [B] float32, d loss / d student [B, V] in student's dtype, times grad_scale):
//   soft_coef * (logsumexp(s*inv_t) - sum_c softmax(t*inv_t)_c * s_c*inv_t)            if teacher
// + hard_coef * (logsumexp(s) - (1 - eps) s_y - eps / V * sum_c s_c)                    if target
std::tuple<at::Tensor, at::Tensor> distill_forward_cpu(const at::Tensor& student,
                                                       const c10::optional<at::Tensor>& teacher,
                                                       const c10::optional<at::Tensor>& target, double inv_t,
                                                       double soft_coef, double hard_coef, double eps,
                                                       double grad_scale);
#ifdef DEPS_FAST_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> distill_forward_cuda(const at::Tensor& student,
                                                        const c10::optional<at::Tensor>& teacher,
                                                        const c10::optional<at::Tensor>& target, double inv_t,
                                                        double soft_coef, double hard_coef, double eps,
                                                        double grad_scale);
#endif

inline void check_distill_args(const at::Tensor& student, const c10::optional<at::Tensor>& teacher,
                               const c10::optional<at::Tensor>& target, at::DeviceType device) {
  TORCH_CHECK(student.dim() == 2 && student.size(1) >= 2, "student must be [B, V] with V >= 2, got ",
              student.sizes());
  TORCH_CHECK(student.device().type() == device, "student must be on ", device, ", got ", student.device());
  TORCH_CHECK(teacher || target, "give a teacher, a target or both");
  if (teacher) {
    TORCH_CHECK(teacher->sizes() == student.sizes(), "teacher shape ", teacher->sizes(), " != student shape ",
                student.sizes());
    TORCH_CHECK(teacher->scalar_type() == student.scalar_type(), "teacher dtype must equal student dtype");
    TORCH_CHECK(teacher->device() == student.device(), "teacher must be on ", student.device());
  }
  if (target) {
    TORCH_CHECK(target->scalar_type() == at::kLong && target->dim() == 1 && target->size(0) == student.size(0),
                "target must be int64 [B]");
    TORCH_CHECK(target->device() == student.device(), "target must be on ", student.device());
  }
}

// ---- fused elastic BatchNorm + activation (CUDA kernels: bn_act_cuda.cu; Triton twin: kernels/bn_act.py) --------
// x, grad_y: [N, c, H, W] float32 / bfloat16 / float16, NCHW-contiguous or channels_last (other strides are made
// NCHW-contiguous; a grad_y in another layout than x is copied into x's). scale, shift, mean, invstd, weight_c,
// sum_dz, sum_dz_xmu: contiguous float32 [c] on x's device. act: 0 none, 1 relu, 2 relu6, 3 hswish (torch's
// backward at the kinks). z = x * scale + shift, dz = grad_y * act'(z). All math and accumulation float32;
// outputs in x's dtype and memory format. Reductions are deterministic (fixed chunks merged in a fixed order).
#ifdef DEPS_FAST_WITH_CUDA
// (mean, biased variance) float32 [c] over N, H, W; Chan-merged (count, mean, M2) partials, numerically stable.
std::tuple<at::Tensor, at::Tensor> bn_act_stats_cuda(const at::Tensor& x);
// y = act(x * scale + shift)
at::Tensor bn_act_forward_cuda(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift, int64_t act);
// (sum dz, sum dz * (x - mean)) float32 [c] over N, H, W
std::tuple<at::Tensor, at::Tensor> bn_act_backward_reduce_cuda(const at::Tensor& grad_y, const at::Tensor& x,
                                                               const at::Tensor& scale, const at::Tensor& shift,
                                                               const at::Tensor& mean, int64_t act);
// training: weight_c * invstd * (dz - sum_dz / count - (x - mean) * invstd^2 * sum_dz_xmu / count);
// eval: dz * scale (mean, invstd, weight_c, sum_dz, sum_dz_xmu unused and may be None)
at::Tensor bn_act_backward_input_cuda(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& scale,
                                      const at::Tensor& shift, const c10::optional<at::Tensor>& mean,
                                      const c10::optional<at::Tensor>& invstd,
                                      const c10::optional<at::Tensor>& weight_c,
                                      const c10::optional<at::Tensor>& sum_dz,
                                      const c10::optional<at::Tensor>& sum_dz_xmu, double count, int64_t act,
                                      bool training);
#endif

}  // namespace deps_fast
