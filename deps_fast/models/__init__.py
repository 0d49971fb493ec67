"""Elastic supernets (layer 4): the OFA search spaces on the fused elastic depthwise op."""
from deps_fast.models.bn import recalibrate_bn
from deps_fast.models.config import SubnetConfig, make_divisible
from deps_fast.models.extract import extract
from deps_fast.models.ofa_import import ImportReport, load_ofa_state_dict, to_ofa_state_dict
from deps_fast.models.supernet import SPACES, Supernet, build_supernet

__all__ = ["SPACES", "ImportReport", "SubnetConfig", "Supernet", "build_supernet", "extract", "load_ofa_state_dict",
           "make_divisible", "recalibrate_bn", "to_ofa_state_dict"]
