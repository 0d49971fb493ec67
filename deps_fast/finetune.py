"""`python -m deps_fast.finetune`: fine-tune one extracted subnet with distillation from the supernet's max net,
report test top-1 before and after, and export it (deps_fast/search/finetune.py; see --help)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional


def build_parser() -> argparse.ArgumentParser:
    from deps_fast.search.cli import _OneLineParser, positive

    p = _OneLineParser(prog="python -m deps_fast.finetune", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Fine-tune a subnet of a trained supernet (distillation from its max net), "
                                   "then export it like the search does.")
    a = p.add_argument
    a("--run", required=True, help="the training output directory the subnet comes from")
    a("--subnet", required=True, metavar="CONFIG.json",
      help="a SubnetConfig JSON: an export's <name>.json or {ks, es, ds, resolution}")
    a("--epochs", type=positive(float), default=3.0, help="fine-tuning epochs (fractions allowed)")
    a("--lr", type=positive(float), default=0.01, help="peak learning rate (cosine to 0)")
    a("--batch-size", type=positive(int), help="default: the run's")
    a("--calib-images", type=positive(int), help="BN recalibration images (default: the run's)")
    a("--out", help="output directory (default RUN/search/finetuned/<subnet file stem>)")
    a("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    a("--seed", type=int, default=0, help="seed of the data order and augmentation")
    a("--no-onnx", action="store_true", help="export state dict and torch.export program only")
    a("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[list] = None) -> int:
    """0 on success; 2 with one line for a user's mistake (no such run or file, a bad number); a failure during
    fine-tuning keeps its traceback."""
    from deps_fast.search.cli import _require, resolve_device
    from deps_fast.search.finetune import FinetuneSettings, finetune, read_subnet
    from deps_fast.search.source import from_run

    args = build_parser().parse_args(argv)
    try:
        if not args.no_onnx:
            _require(["onnx", "onnxscript"], "ONNX export (or pass --no-onnx)")
        device = resolve_device(args.device)
        config = read_subnet(args.subnet)
        source = from_run(args.run, device)
        source.supernet.validate(config)
    except (ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = FinetuneSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                calib_images=args.calib_images, seed=args.seed, onnx=not args.no_onnx,
                                progress=not args.no_progress)
    out = Path(args.out) if args.out else Path(args.run) / "search" / "finetuned" / Path(args.subnet).stem
    command = "python -m deps_fast.finetune " + " ".join(sys.argv[1:] if argv is None else argv)
    result = finetune(source, config, settings, device, out, command)
    print(f"{result['subnet']}: test top-1 {result['test_top1_before']:.2f}% -> {result['test_top1_after']:.2f}% "
          f"after {result['epochs']:g} epochs ({result['seconds']:.0f} s; teacher {result['teacher_test_top1']:.2f}%); "
          f"exported to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
