"""Fine-tuning an extracted subnet with distillation from the supernet's max net (docs/method.md §9).

The student is the standalone subnet (standard layers, weights copied from the supernet); the teacher is the
max net, extracted and BN-recalibrated, frozen in eval mode. Loss per batch: soft cross-entropy to the
teacher (T = 1) plus label-smoothed cross-entropy to the labels, through the fused distillation loss (the
DεpS subnet loss plus the label term OFA's fine-tuning keeps). SGD with the run's momentum and weight decay,
cosine learning rate from --lr to 0, the run's batch size and augmentation. Top-1 on the test set before and
after, both after the same BN recalibration.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from deps_fast import _validate, recalibrate_bn
from deps_fast._util import prefers_channels_last
from deps_fast.models import SubnetConfig
from deps_fast.ops import distillation_loss
from deps_fast.search.source import Source
from deps_fast.trainer.evaluate import top1
from deps_fast.trainer.step import parameter_groups


@dataclass
class FinetuneSettings:
    epochs: float = 3.0
    lr: float = 0.01
    batch_size: Optional[int] = None       # None: the run's
    calib_images: Optional[int] = None     # None: the run's
    seed: int = 0
    onnx: bool = True
    progress: bool = True


def read_subnet(path) -> SubnetConfig:
    """A SubnetConfig from an export's <name>.json (key "config") or a bare SubnetConfig JSON file."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--subnet {str(path)!r}: no such file")
    try:
        data = json.loads(file.read_text())
        return SubnetConfig.from_dict(data["config"] if isinstance(data, dict) and "config" in data else data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--subnet {str(path)!r} is not a SubnetConfig JSON ({exc})") from exc


def finetune(source: Source, config: SubnetConfig, settings: FinetuneSettings, device: torch.device, out_dir,
             command: str = "") -> dict:
    o = source.options
    net = source.supernet
    config = config if config.resolution else dataclasses.replace(config, resolution=source.resolution)
    net.validate(config)
    _validate.positive("epochs", settings.epochs)
    _validate.positive("lr", settings.lr)
    batch_size = settings.batch_size or o.batch_size
    data = source.dataset(config.resolution)
    cl = prefers_channels_last(device)
    calibration = data.calibration_batches(n_images=settings.calib_images or o.calib_images,
                                           batch_size=o.calib_batch, seed=settings.seed, device=device,
                                           channels_last=cl)
    test = data.test_loader(o.eval_batch, device=device, channels_last=cl)
    loader = data.train_loader(batch_size, device=device, seed=settings.seed, channels_last=cl)

    started = time.perf_counter()
    teacher = recalibrate_bn(net.extract(dataclasses.replace(net.max_config(), resolution=config.resolution)), None,
                             calibration).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = recalibrate_bn(net.extract(config), None, calibration)
    before = top1(student.eval(), test, device)
    teacher_top1 = top1(teacher, test, device)

    steps = max(1, round(settings.epochs * len(loader)))
    optimizer = torch.optim.SGD(parameter_groups(student, o.weight_decay), lr=settings.lr, momentum=o.momentum,
                                nesterov=o.momentum > 0)
    from tqdm import tqdm

    losses = []
    student.train()
    for step in tqdm(range(steps), desc="fine-tune", unit="step", disable=not settings.progress):
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        x, y = loader.batch(*divmod(step, len(loader)))
        with torch.no_grad():
            soft = teacher(x)
        loss = distillation_loss(student(x), soft, y, soft_weight=1.0, hard_weight=1.0,
                                 label_smoothing=o.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    recalibrate_bn(student, None, calibration)
    after = top1(student.eval(), test, device)
    seconds = time.perf_counter() - started

    from deps_fast.search.export import export_subnet

    result = {"command": command, "config": config.to_dict(), "subnet": str(config), "epochs": settings.epochs,
              "steps": steps, "lr": settings.lr, "batch_size": batch_size, "test_top1_before": before,
              "test_top1_after": after, "teacher_test_top1": teacher_top1, "first_loss": losses[0],
              "last_loss": losses[-1], "seconds": round(seconds, 2), "source": source.identity}
    result["export"] = export_subnet(student, config, net.in_channels, out_dir, "finetuned", onnx=settings.onnx,
                                     extra={"test_top1_before": before, "test_top1_after": after})
    Path(out_dir, "finetune.json").write_text(json.dumps(result, indent=1))
    return result
