"""deps_fast: once-for-all supernet training with DεpS (Delayed ε-Shrinking) on fused elastic kernels."""
from deps_fast import ops
from deps_fast.models import (SubnetConfig, Supernet, build_supernet, extract, load_ofa_state_dict, recalibrate_bn,
                              to_ofa_state_dict)
from deps_fast.ops import (available_backends, distillation_loss, elastic_batch_norm_act,
                           elastic_depthwise_conv2d)

__version__ = "0.1.0"
__all__ = ["ops", "available_backends", "distillation_loss", "elastic_batch_norm_act", "elastic_depthwise_conv2d",
           "SubnetConfig", "Supernet", "build_supernet", "extract", "load_ofa_state_dict", "recalibrate_bn",
           "to_ofa_state_dict", "__version__"]
