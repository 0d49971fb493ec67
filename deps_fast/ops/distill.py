"""distillation_loss: label-smoothed cross-entropy and soft cross-entropy against a teacher, fused.

One custom op reads each row of student and teacher once, writes the per-row loss and d loss / d student
(already scaled for the reduction); the autograd formula only multiplies that stored gradient by the
incoming grad_output. The `torch` backend runs deps_fast.reference instead.
"""
from __future__ import annotations

from typing import Optional

import torch

from deps_fast import _ext, _validate, reference
from deps_fast.ops import _backend

_REDUCTIONS = ("mean", "sum", "none")


def _check_inputs(student, teacher, target, temperature, soft_weight, hard_weight, label_smoothing, reduction):
    if not isinstance(student, torch.Tensor):
        raise TypeError(f"student must be a torch.Tensor of logits [B, V], got {type(student).__name__}")
    if student.dim() != 2 or student.shape[1] < 2:
        raise ValueError(f"student must be logits [B, V] with V >= 2, got shape {tuple(student.shape)}")
    if student.dtype not in _backend.FAST_DTYPES + (torch.float64,):
        raise TypeError(f"student.dtype must be float32, bfloat16 or float16 (float64: torch backend), "
                        f"got {student.dtype}")
    if teacher is None and target is None:
        raise ValueError("give a teacher (soft term), a target (hard term) or both; got neither")
    if teacher is not None:
        if not isinstance(teacher, torch.Tensor):
            raise TypeError(f"teacher must be None or a torch.Tensor, got {type(teacher).__name__}")
        if teacher.shape != student.shape:
            raise ValueError(f"teacher shape {tuple(teacher.shape)} must equal student shape {tuple(student.shape)}")
        if teacher.dtype != student.dtype:
            raise TypeError(f"teacher.dtype {teacher.dtype} must equal student.dtype {student.dtype}")
        if teacher.device != student.device:
            raise ValueError(f"teacher is on {teacher.device} but student is on {student.device}")
    if target is not None:
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be None or a torch.Tensor of class indices, got {type(target).__name__}")
        if target.dtype != torch.int64:
            raise TypeError(f"target.dtype must be torch.int64, got {target.dtype}")
        if tuple(target.shape) != (student.shape[0],):
            raise ValueError(f"target must have shape ({student.shape[0]},), got {tuple(target.shape)}")
        if target.device != student.device:
            raise ValueError(f"target is on {target.device} but student is on {student.device}")
        if target.numel() and target.device.type != "meta":  # meta tensors carry shapes only
            lo, hi = torch.aminmax(target)  # one reduction and one device sync per call
            lo, hi = int(lo), int(hi)
            if lo < 0 or hi >= student.shape[1]:
                bad = lo if lo < 0 else hi
                raise ValueError(f"target values must be in [0, V={student.shape[1]}), got {bad}")
    # Below 1e-4 the logits / T reach ~1e5 x their size and float32 cancellation makes the fused kernels'
    # result meaningless (the reference loses accuracy too): refused on every backend.
    _validate.real("temperature", temperature, "a finite number >= 1e-4", lambda v: v >= 1e-4)
    _validate.real("soft_weight", soft_weight)
    _validate.real("hard_weight", hard_weight)
    _validate.fraction("label_smoothing", label_smoothing, include_one=True)
    _validate.one_of("reduction", reduction, _REDUCTIONS)


def _run(backend, student, teacher, target, inv_t, soft_coef, hard_coef, eps, grad_scale):
    if backend == "triton":
        tk = _backend.triton_kernels()["distill"]
        return tk.distillation_forward(student, teacher, target, inv_t, soft_coef, hard_coef, eps, grad_scale)
    ext = _ext.extension()  # the C++ side makes its inputs contiguous
    fn = ext.distill_forward_cuda if backend == "cuda" else ext.distill_forward_cpu
    return fn(student, teacher, target, inv_t, soft_coef, hard_coef, eps, grad_scale)


@torch.library.custom_op("deps_fast::distill_fwd", mutates_args=())
def distill_fwd(student: torch.Tensor, teacher: Optional[torch.Tensor], target: Optional[torch.Tensor],
                temperature: float, soft_weight: float, hard_weight: float, label_smoothing: float,
                reduction: str, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss reduced as asked, d loss / d student already scaled for the reduction)."""
    B = student.shape[0]
    T = temperature
    loss_rows, grad = _run(backend, student, teacher, target, 1.0 / T, soft_weight * T * T, hard_weight,
                           label_smoothing, 1.0 / B if reduction == "mean" else 1.0)
    if reduction == "mean":
        return loss_rows.mean(), grad
    if reduction == "sum":
        return loss_rows.sum(), grad
    return loss_rows, grad


@distill_fwd.register_fake
def _(student, teacher, target, temperature, soft_weight, hard_weight, label_smoothing, reduction, backend):
    shape = (student.shape[0],) if reduction == "none" else ()
    return student.new_empty(shape, dtype=torch.float32), torch.empty_like(student, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.per_row = inputs[7] == "none"


def _backward(ctx, grad_loss, _grad_of_grad):
    (grad,) = ctx.saved_tensors
    if torch.is_grad_enabled() and (grad_loss.requires_grad or grad.requires_grad):
        raise RuntimeError("distillation_loss: double backward (create_graph=True) is not supported by the fused "
                           "backends; use backend='torch' for higher-order gradients")
    scale = grad_loss[:, None] if ctx.per_row else grad_loss
    # Multiply in float32 and write straight into the student's dtype: no [B, V] float32 intermediate.
    return torch.mul(grad, scale, out=torch.empty_like(grad)), None, None, None, None, None, None, None, None


distill_fwd.register_autograd(_backward, setup_context=_setup_context)


def distillation_loss(
    student: torch.Tensor,
    teacher: Optional[torch.Tensor] = None,
    target: Optional[torch.Tensor] = None,
    *,
    temperature: float = 1.0,
    soft_weight: float = 1.0,
    hard_weight: float = 1.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Per row: soft_weight * T^2 * sum_c -softmax(teacher/T)_c * log_softmax(student/T)_c (if teacher)
    + hard_weight * cross_entropy(student, target, label_smoothing) (if target); then mean, sum or none.

    student, teacher: logits [B, V] (float32 / bfloat16 / float16, the same dtype); target: int64 [B].
    The gradient flows to student only: the teacher is a constant even if it requires grad. The loss is
    float32. NaN/inf in the logits propagate (the trainer guards against them).
    """
    _check_inputs(student, teacher, target, temperature, soft_weight, hard_weight, label_smoothing, reduction)
    name = _backend.resolve(backend, student.device,
                           _backend.kernel_input_reason("student", student, student.shape[0] == 0))
    if name == "torch":
        return reference.distillation_loss(student, teacher, target, temperature=temperature,
                                           soft_weight=soft_weight, hard_weight=hard_weight,
                                           label_smoothing=label_smoothing, reduction=reduction)
    teacher = None if teacher is None else teacher.detach()
    loss, _ = distill_fwd(student, teacher, target, float(temperature), float(soft_weight), float(hard_weight),
                          float(label_smoothing), reduction, name)
    return loss
