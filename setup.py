"""Builds the optional C++/CUDA extension `deps_fast._C` from csrc/.

CPU sources are always compiled. CUDA sources are added when torch is a CUDA build and a CUDA toolkit is found
(CUDA_HOME, else /usr/local/cuda). Environment switches:
  DEPS_FAST_BUILD_EXT=0    build no extension at all (the package then runs on the torch/triton backends)
  DEPS_FAST_BUILD_CUDA=0/1 skip / require the CUDA sources
  TORCH_CUDA_ARCH_LIST     defaults to "8.0;9.0" when no GPU is visible (torch's guess fails without a GPU)
"""
import glob
import os
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    value = os.environ.get(name)
    return None if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def _find_cuda_home():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if not home and os.path.isdir("/usr/local/cuda"):
        home = "/usr/local/cuda"
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return home
    return None


def _extensions():
    if _flag("DEPS_FAST_BUILD_EXT") is False:
        print("deps_fast: DEPS_FAST_BUILD_EXT=0, building no extension", file=sys.stderr)
        return [], {}
    import torch
    from torch.utils import cpp_extension

    want_cuda = _flag("DEPS_FAST_BUILD_CUDA")
    cuda_home = _find_cuda_home()
    use_cuda = bool(torch.version.cuda) and cuda_home is not None and want_cuda is not False
    if want_cuda and not use_cuda:
        raise RuntimeError(
            f"DEPS_FAST_BUILD_CUDA=1 but torch.version.cuda={torch.version.cuda!r} and CUDA toolkit={cuda_home!r}; "
            "install a CUDA build of torch and set CUDA_HOME"
        )

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cxx = ["-O3", "-fopenmp", "-Wno-psabi"]  # no -std: torch adds the standard its headers need (C++20 from 2.13)
    # at::parallel_for is header-inline over OpenMP: without -fopenmp the loops run on one thread.
    link = ["-fopenmp"]
    if use_cuda:
        os.environ["CUDA_HOME"] = cuda_home
        cpp_extension.CUDA_HOME = cuda_home  # torch reads it at import time and may have guessed wrong
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        sources += sorted(glob.glob(os.path.join("csrc", "*.cu")))
        ext = cpp_extension.CUDAExtension(
            "deps_fast._C",
            sources,
            define_macros=[("DEPS_FAST_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
            extra_link_args=link,
        )
    else:
        ext = cpp_extension.CppExtension("deps_fast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)
    print(f"deps_fast: building _C ({'CPU+CUDA' if use_cuda else 'CPU only'})", file=sys.stderr)
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
