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

}  // namespace deps_fast
