"""Exports of an extracted subnet, each checked against the module it came from.

- `<name>.pt` (state dict) + `<name>.json` (the SubnetConfig, input shape, classes): reload with
  `supernet.extract(config).load_state_dict(...)` or `load_subnet`;
- `<name>.pt2`: a `torch.export` program (`torch.export.load(path).module()`), batch size dynamic;
- `<name>.onnx`: ONNX from the torch.export-based exporter (`torch.onnx.export(..., dynamo=True)`, needs
  onnx and onnxscript), passed through `onnx.checker`, and run by ONNX Runtime when it is installed.

Every program is run on a fresh batch and compared with the eager module; the largest difference is recorded,
and a difference beyond the tolerance is an error, not a note.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from deps_fast._util import atomic_write
from deps_fast.models import SubnetConfig

TOLERANCE = 1e-4  # float32 outputs of a re-traced graph differ from eager by reassociation only
ONNX_OPSET = 18


def _batch_dim():
    """The first argument's dim 0 is dynamic (positional form: any module's argument name works)."""
    return ({0: torch.export.Dim("batch", min=1, max=4096)},)


def export_program(module: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """`module` (eval mode) as a torch.export program whose batch size is dynamic."""
    return torch.export.export(module.eval(), (example,), dynamic_shapes=_batch_dim(), strict=False)


@contextlib.contextmanager
def _quiet_exporter():
    """Silence what the exporter says about itself on every call: a log line per torchvision op it skips when
    torchvision is absent, and a FutureWarning from torch's own pytree internals (nothing a caller can act on)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def onnx_bytes(module: nn.Module, example: torch.Tensor) -> bytes:
    """ONNX bytes of `module` from the torch.export-based exporter, checked by onnx.checker."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail here with the install hint)
    except ImportError as exc:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({exc}): pip install onnx onnxscript") from exc
    with _quiet_exporter():
        program = torch.onnx.export(module.eval(), (example,), dynamo=True, dynamic_shapes=_batch_dim(),
                                    input_names=["x"], output_names=["logits"], opset_version=ONNX_OPSET,
                                    verbose=False)
    buffer = io.BytesIO()
    program.save(buffer) if hasattr(program, "save") else onnx.save(program.model_proto, buffer)
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    return data


def onnx_session(module: nn.Module, example: torch.Tensor):
    """(ONNX Runtime CPU session, input name) for `module`; ImportError naming the package if one is missing."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"running ONNX needs onnxruntime ({exc}): pip install onnxruntime") from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same threads torch times with
    session = onnxruntime.InferenceSession(onnx_bytes(module, example), options, providers=["CPUExecutionProvider"])
    return session, session.get_inputs()[0].name


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max())


def _check(what: str, diff: float) -> float:
    if not diff <= TOLERANCE:
        raise RuntimeError(f"{what} differs from the eager module by {diff:.3g} (tolerance {TOLERANCE:g})")
    return diff


def export_subnet(static: nn.Module, config: SubnetConfig, in_channels: int, out_dir, name: str,
                  *, onnx: bool = True, extra: Optional[dict] = None) -> dict:
    """Write the exports of `static` (an extracted subnet for `config`) as out_dir/name.*; returns a record of
    the files and the measured differences. `extra` goes into the JSON (e.g. accuracy, latency)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    static = static.eval()
    device = next(static.parameters()).device
    size = config.resolution
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, in_channels, size, size, generator=generator).to(device)
    check = torch.randn(3, in_channels, size, size, generator=generator).to(device)  # another batch size
    with torch.no_grad():
        expected = static(check)
    record: dict = {"config": config.to_dict(), "name": str(config), "input_shape": [in_channels, size, size],
                    "num_classes": int(expected.shape[1]), **(extra or {})}
    files = {}

    buffer = io.BytesIO()
    torch.save(static.state_dict(), buffer)
    files["state_dict"] = atomic_write(out / f"{name}.pt", buffer.getvalue())

    program = export_program(static, example)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    files["torch_export"] = atomic_write(out / f"{name}.pt2", buffer.getvalue())
    reloaded = torch.export.load(io.BytesIO(buffer.getvalue())).module()
    with torch.no_grad():
        record["torch_export_max_abs_diff"] = _check("the torch.export program", _max_diff(reloaded(check), expected))

    if onnx:
        cpu_static = static.cpu()
        files["onnx"] = atomic_write(out / f"{name}.onnx", onnx_bytes(cpu_static, example.cpu()))
        try:
            import onnxruntime
        except ImportError:
            record["onnxruntime"] = "not installed: outputs not compared (pip install onnxruntime)"
        else:
            session = onnxruntime.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: check.cpu().numpy()})[0])
            record["onnxruntime"] = onnxruntime.__version__
            record["onnx_max_abs_diff"] = _check("the ONNX model under ONNX Runtime", _max_diff(got, expected))
        static.to(device)
    record["files"] = {k: str(v) for k, v in files.items()}
    atomic_write(out / f"{name}.json", json.dumps(record, indent=1).encode())
    return record


def load_subnet(supernet, config_json) -> nn.Module:
    """The extracted subnet a `<name>.json` names, with the weights of the `<name>.pt` beside it."""
    path = Path(config_json)
    record = json.loads(path.read_text())
    static = supernet.extract(SubnetConfig.from_dict(record["config"]))
    static.load_state_dict(torch.load(path.with_suffix(".pt"), map_location="cpu"))
    return static.eval()
