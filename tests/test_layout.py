"""The repository layout as installed: the Triton kernels live in the top-level kernels/ folder and install as
deps_fast.kernels; nothing named `kernels` lands at the top of site-packages; deps_fast imports without Triton."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import deps_fast.kernels

REPO = Path(__file__).resolve().parents[1]


def test_installed_kernels_are_the_top_level_folder():
    assert Path(deps_fast.kernels.__file__).resolve().parent == REPO / "kernels"
    assert not (REPO / "deps_fast" / "kernels").exists(), "a second copy of the kernels under deps_fast/"


def test_wheel_holds_deps_fast_kernels_and_no_top_level_kernels(tmp_path):
    source = tmp_path / "src"
    for name in ("pyproject.toml", "setup.py", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((REPO / name).read_bytes())
    for folder in ("deps_fast", "kernels", "csrc"):
        for file in (REPO / folder).rglob("*"):
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".so":
                target = source / file.relative_to(REPO)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(file.read_bytes())
    env = dict(os.environ, DEPS_FAST_BUILD_EXT="0")  # the layout, not the C++ build, is under test
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                    str(source), "-w", str(tmp_path / "dist")], check=True, env=env, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("deps_fast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    kernel_files = {n for n in names if n.startswith("deps_fast/kernels/")}
    expected = {f"deps_fast/kernels/{p.name}" for p in (REPO / "kernels").glob("*.py")}
    assert kernel_files == expected
    assert not [n for n in names if n.split("/")[0] == "kernels"], "a top-level `kernels` package in the wheel"


def test_deps_fast_imports_without_triton_and_says_why_triton_is_unavailable():
    code = ("import os, sys; sys.modules['triton'] = None; os.environ['TRITON_INTERPRET'] = '1'\n"
            "import torch, deps_fast\n"
            "why = deps_fast.available_backends('cpu')['triton']\n"
            "print(why)\n"
            "try:\n"
            "    deps_fast.elastic_depthwise_conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3), 3,\n"
            "                                       backend='triton')\n"
            "except deps_fast.ops.BackendUnavailable as exc:\n"
            "    print('refused:', exc)\n"
            "print(deps_fast.elastic_depthwise_conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3), 3).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Triton kernels cannot be imported" in out
    assert "refused: backend 'triton' cannot run this call: the Triton kernels cannot be imported" in out
    assert "torch.Size([1, 2, 5, 5])" in out  # auto still runs on the other backends
