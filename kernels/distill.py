"""Triton kernel of the fused distillation loss: one program per row, two passes over the row.

Pass 1 keeps online (max, sum-of-exp) statistics of student/T and teacher/T, the teacher-weighted sum of
student/T, and for the hard term the statistics of the student at T = 1 and the row sum; that gives the loss.
Pass 2 writes d loss / d student for the row. Backward then only scales the stored gradient. V is excluded
from integer specialisation, so one compiled kernel serves every vocabulary size.

  soft  = logsumexp(s/T) - sum_c p_t,c * s_c/T            (= -sum_c p_t,c log softmax(s/T)_c)
  hard  = logsumexp(s) - (1-eps) s_y - (eps/V) sum_c s_c  (label-smoothed cross-entropy)
  dsoft/ds = (softmax(s/T) - p_t) / T,  dhard/ds = softmax(s) - (1-eps) onehot(y) - eps/V
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from deps_fast._util import triton_interpreting

_INTERPRET = triton_interpreting()  # fixed when the kernels are defined, as Triton itself is

# Test hook (None in real use): a fixed BLOCK_V, so the CPU interpreter runs the multi-block online softmax.
BLOCK_V_OVERRIDE: int | None = None


@triton.jit
def _online(m, z, x):
    """Merge a block's values x (masked lanes = -inf) into the running max m and sum of exp z."""
    m_new = tl.maximum(m, tl.max(x, axis=0))
    z = z * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
    return m_new, z


@triton.jit(do_not_specialize=["V"])
def _distill_kernel(
    s_ptr, t_ptr, y_ptr, loss_ptr, grad_ptr, V, s_row, t_row, g_row,
    inv_t, soft_coef, hard_coef, eps, grad_scale,
    HAS_TEACHER: tl.constexpr, HAS_TARGET: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    s_base = s_ptr + row * s_row
    t_base = t_ptr + row * t_row
    neg_inf = float("-inf")
    zero = tl.sum(tl.zeros((BLOCK_V,), dtype=tl.float32), axis=0)
    m_s, z_s, m_t, z_t, a_t = zero + neg_inf, zero, zero + neg_inf, zero, zero
    m_h, z_h, sum_s = zero + neg_inf, zero, zero
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        ok = offs < V
        s = tl.load(s_base + offs, mask=ok, other=neg_inf).to(tl.float32)
        if HAS_TEACHER:
            st = s * inv_t
            tt = tl.load(t_base + offs, mask=ok, other=neg_inf).to(tl.float32) * inv_t
            m_s, z_s = _online(m_s, z_s, st)
            m_new = tl.maximum(m_t, tl.max(tt, axis=0))
            e = tl.exp(tt - m_new)
            rescale = tl.exp(m_t - m_new)
            z_t = z_t * rescale + tl.sum(e, axis=0)
            a_t = a_t * rescale + tl.sum(e * tl.where(ok, st, 0.0), axis=0)
            m_t = m_new
        if HAS_TARGET:
            m_h, z_h = _online(m_h, z_h, s)
            sum_s += tl.sum(tl.where(ok, s, 0.0), axis=0)
    loss = zero
    if HAS_TEACHER:
        loss += soft_coef * (m_s + tl.log(z_s) - a_t / z_t)
    if HAS_TARGET:
        y = tl.load(y_ptr + row)
        s_y = tl.load(s_base + y).to(tl.float32)
        # eps = 0: no smoothing term at all, so -inf (masked) logits give F.cross_entropy's finite loss, not 0 * -inf
        smooth = tl.where(eps > 0, eps / V * sum_s, 0.0)
        loss += hard_coef * (m_h + tl.log(z_h) - (1.0 - eps) * s_y - smooth)
    tl.store(loss_ptr + row, loss)

    g_base = grad_ptr + row * g_row
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        ok = offs < V
        s = tl.load(s_base + offs, mask=ok, other=0.0).to(tl.float32)
        g = tl.zeros((BLOCK_V,), dtype=tl.float32)
        if HAS_TEACHER:
            tt = tl.load(t_base + offs, mask=ok, other=0.0).to(tl.float32) * inv_t
            p_s = tl.exp(s * inv_t - m_s) / z_s
            p_t = tl.exp(tt - m_t) / z_t
            g += soft_coef * inv_t * (p_s - p_t)
        if HAS_TARGET:
            q = tl.where(offs == y, 1.0 - eps, 0.0) + eps / V
            g += hard_coef * (tl.exp(s - m_h) / z_h - q)
        tl.store(g_base + offs, (g * grad_scale).to(grad_ptr.dtype.element_ty), mask=ok)


def _block_v(V: int) -> int:
    if BLOCK_V_OVERRIDE is not None:
        return BLOCK_V_OVERRIDE
    if _INTERPRET:  # the interpreter pays per op, not per element
        return min(65536, triton.next_power_of_2(V))
    return min(4096, max(128, triton.next_power_of_2(V)))


def distillation_forward(student: torch.Tensor, teacher, target, inv_t: float, soft_coef: float,
                         hard_coef: float, eps: float, grad_scale: float):
    """Row losses [B] float32 and the student gradient [B, V] (student's dtype, already times grad_scale)."""
    B, V = student.shape
    student = student.contiguous()
    loss = torch.empty(B, dtype=torch.float32, device=student.device)
    grad = torch.empty_like(student)
    t = teacher.contiguous() if teacher is not None else student
    y = target.contiguous() if target is not None else loss
    if B:
        _distill_kernel[(B,)](student, t, y, loss, grad, V, student.stride(0), t.stride(0), grad.stride(0),
                              inv_t, soft_coef, hard_coef, eps, grad_scale,
                              HAS_TEACHER=teacher is not None, HAS_TARGET=target is not None,
                              BLOCK_V=_block_v(V))
    return loss, grad
