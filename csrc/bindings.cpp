// Python bindings of deps_fast._C. The Python layer (deps_fast/ops) owns validation messages, dispatch and autograd.
#include <torch/extension.h>  // pybind11 and the tensor casters; only this file pays for it

#include "deps_fast.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "deps_fast kernels (CPU always; CUDA when built with a CUDA toolkit)";
#ifdef DEPS_FAST_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("dwconv_forward_cpu", &deps_fast::dwconv_forward_cpu, "elastic depthwise conv forward (CPU)");
  m.def("dwconv_backward_input_cpu", &deps_fast::dwconv_backward_input_cpu, "grad input (CPU)");
  m.def("dwconv_backward_weight_cpu", &deps_fast::dwconv_backward_weight_cpu, "grad weight window (CPU)");
  m.def("distill_forward_cpu", &deps_fast::distill_forward_cpu, "fused distillation loss and gradient (CPU)");
  m.def("bn_act_stats_cpu", &deps_fast::bn_act_stats_cpu, "BN batch mean and biased variance (CPU)");
  m.def("bn_act_forward_cpu", &deps_fast::bn_act_forward_cpu, "act(x * scale + shift) (CPU)");
  m.def("bn_act_backward_reduce_cpu", &deps_fast::bn_act_backward_reduce_cpu, "BN+act backward sums (CPU)");
  m.def("bn_act_backward_input_cpu", &deps_fast::bn_act_backward_input_cpu, "BN+act grad input (CPU)");
#ifdef DEPS_FAST_WITH_CUDA
  m.def("distill_forward_cuda", &deps_fast::distill_forward_cuda, "fused distillation loss and gradient (CUDA)");
  m.def("dwconv_forward_cuda", &deps_fast::dwconv_forward_cuda, "elastic depthwise conv forward (CUDA)");
  m.def("dwconv_backward_input_cuda", &deps_fast::dwconv_backward_input_cuda, "grad input (CUDA)");
  m.def("dwconv_backward_weight_cuda", &deps_fast::dwconv_backward_weight_cuda, "grad weight window (CUDA)");
  m.def("bn_act_stats_cuda", &deps_fast::bn_act_stats_cuda, "BatchNorm statistics: mean, biased var (CUDA)");
  m.def("bn_act_forward_cuda", &deps_fast::bn_act_forward_cuda, "fused BatchNorm + activation forward (CUDA)");
  m.def("bn_act_backward_reduce_cuda", &deps_fast::bn_act_backward_reduce_cuda,
        "fused BatchNorm + activation backward reductions (CUDA)");
  m.def("bn_act_backward_input_cuda", &deps_fast::bn_act_backward_input_cuda,
        "fused BatchNorm + activation grad input (CUDA)");
#endif
}
