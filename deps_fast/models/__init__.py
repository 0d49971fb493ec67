"""Elastic supernets (layer 4): the OFA search spaces on the fused elastic depthwise op."""
from deps_fast.models.bn import recalibrate_bn
from deps_fast.models.config import SubnetConfig, make_divisible
from deps_fast.models.extract import extract
from deps_fast.models.supernet import SPACES, Supernet, build_supernet

__all__ = ["SPACES", "SubnetConfig", "Supernet", "build_supernet", "extract", "make_divisible", "recalibrate_bn"]
from deps_fast.models.ofa_import import load_ofa_state_dict, to_ofa_state_dict; __all__ += ["load_ofa_state_dict", "to_ofa_state_dict"]  # noqa: E402,E702
