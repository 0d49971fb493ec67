"""The public ops of deps_fast, each dispatching to a backend: cuda, triton, cpp or torch (the reference)."""
from deps_fast.ops._backend import BACKENDS, BackendUnavailable
from deps_fast.ops._backend import available as available_backends
from deps_fast.ops.bn_act import elastic_batch_norm_act
from deps_fast.ops.depthwise import elastic_depthwise_conv2d
from deps_fast.ops.distill import distillation_loss

__all__ = ["BACKENDS", "BackendUnavailable", "available_backends", "distillation_loss", "elastic_batch_norm_act",
           "elastic_depthwise_conv2d"]
