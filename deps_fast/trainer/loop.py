"""The training run: setup, resume, the step loop, checkpoints, evaluation and the report.

`train(options)` is what `python -m deps_fast.train` calls. Everything the loop decides per step comes
from the schedule's StepPlan; everything it needs to continue exactly is in the checkpoint.
"""
from __future__ import annotations

import copy
import itertools
import json
import platform
import signal
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

import deps_fast
from deps_fast.models import build_supernet
from deps_fast.ops import _backend
from deps_fast.schedules import Schedule, make_schedule
from deps_fast.trainer import checkpoint as ckpt
from deps_fast.trainer.data import DeviceLoader, ImageFolderData, calibration_batches, load_dataset
from deps_fast.trainer.distributed import World, barrier, init_world, shutdown, sync_step
from deps_fast.trainer.evaluate import evaluate_subnet, final_subnets, resize_batch
from deps_fast.trainer.options import Options
from deps_fast.trainer.progress import Progress
from deps_fast.trainer.report import load_report, write_report
from deps_fast.trainer.step import parameter_groups, train_step

# Options that must not change across --resume (the checkpoint would not mean the same thing).
_RESUME_FIXED = ("schedule", "space", "data", "width_mult", "kernel_sizes", "expand_ratios", "depths",
                 "resolution", "batch_size", "accum_steps", "epochs", "budget_scale", "fm_fraction", "eps_epochs",
                 "n_random", "warmup_epochs", "seed", "lr", "lr_floor", "momentum", "weight_decay",
                 "label_smoothing", "dropout", "amp")


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and exits."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling there
                pass
        return self

    def _handle(self, signum, _frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum
        print(f"\n[deps_fast] signal {signum}: finishing the step, then checkpointing", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def _out_dir(o: Options) -> Path:
    return Path(o.out or f"runs/{o.schedule}-{o.space}-{Path(str(o.data)).name}")


class Trainer:
    def __init__(self, o: Options, command: Optional[str] = None):
        self.o = o
        self.command = command or "python -m deps_fast.train " + " ".join(sys.argv[1:])
        self.world, self.device = init_world(o.device)
        self.backend = _backend.resolve(o.backend, self.device, lambda name: None)  # fails early and clearly
        self.amp_dtype = _amp_dtype(o.amp, self.device)
        self.out = _out_dir(o)
        torch.manual_seed(o.seed)  # identical initial weights on every rank
        self.data = load_dataset(o.data, resolution=o.resolution or 224, num_workers=o.workers)
        self.folder = isinstance(self.data, ImageFolderData)
        native = None if self.folder else self.data.resolution
        self.resolution = o.resolution or native or 224
        self.resize = None if self.folder or self.resolution == native else self.resolution
        in_channels = 3 if self.folder else self.data.in_channels
        self.model = build_supernet(o.space, self.data.num_classes, o.width_mult, o.resolved_kernel_sizes(),
                                    o.expand_ratios, o.depths, dropout=o.dropout, in_channels=in_channels)
        self.model.to(self.device).set_backend(o.backend)
        self.channels_last = self.device.type == "cuda"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, o.weight_decay), lr=o.lr,
                                         momentum=o.momentum, nesterov=o.momentum > 0)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.train_loader = self._train_loader()
        self.schedule: Schedule = make_schedule(o.schedule, epochs=o.epochs, budget_scale=o.budget_scale,
                                                steps_per_epoch=self.steps_per_epoch, lr=o.lr,
                                                **self._schedule_kwargs())
        self.step, self.teacher, self.bad_steps, self.saved_step = 0, None, 0, None
        self.compare = [load_report(path) for path in o.compare]  # a bad --compare fails now, not after training
        per_rank = o.batch_size // self.world.size
        if per_rank % o.accum_steps:
            raise ValueError(f"batch_size={o.batch_size} gives {per_rank} images per rank, not a multiple of "
                             f"accum_steps={o.accum_steps}")
        self.phase_wall: dict[str, float] = {}
        self.evals: list[dict] = []
        self.test_batches = self._test_batches()  # built once: every evaluation reads the same device copy
        self.calibration = calibration_batches(self.data, n_images=o.calib_images, batch_size=o.calib_batch,
                                               seed=o.seed, device=self.device, channels_last=self.channels_last)

    # ---- setup helpers --------------------------------------------------------------------------------------
    def _train_loader(self):
        o, w = self.o, self.world
        if self.folder:
            self.steps_per_epoch = len(self.data.train_loader(o.batch_size, w.rank, w.size, o.seed, 0))
            return None
        d = self.data
        loader = DeviceLoader(d.train_images, d.train_labels, batch_size=o.batch_size, device=self.device,
                              mean=d.mean, std=d.std, pad=d.pad, flip=d.flip, train=True, seed=o.seed,
                              rank=w.rank, world_size=w.size, channels_last=self.channels_last)
        self.steps_per_epoch = len(loader)
        return loader

    def _schedule_kwargs(self) -> dict:
        o = self.o
        space = dict(kernel_sizes=o.resolved_kernel_sizes(), depths=tuple(o.depths),
                     expand_ratios=tuple(o.expand_ratios), lr_floor=o.lr_floor)
        if o.schedule == "deps":
            return dict(space, fm_fraction=o.fm_fraction, eps_epochs=o.eps_epochs, n_random=o.n_random,
                        warmup_epochs=o.warmup_epochs)
        if o.schedule == "bignas":
            return dict(space, n_random=o.n_random, warmup_epochs=o.warmup_epochs or None)
        return space

    def _test_batches(self):
        if self.folder:
            return self.data.test_loader(self.o.eval_batch)
        d = self.data
        return DeviceLoader(d.test_images, d.test_labels, batch_size=self.o.eval_batch, device=self.device,
                            mean=d.mean, std=d.std, train=False, channels_last=self.channels_last)

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"version": deps_fast.__version__, "step": self.step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "teacher": None if self.teacher is None else self.teacher.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
                "rng": ckpt.capture_rng_state(), "phase_wall": dict(self.phase_wall), "evals": list(self.evals),
                "bad_steps": self.bad_steps, "options": self.o.to_dict(), "schedule": self.schedule.to_dict()}

    def save(self) -> None:
        self.saved_step = self.step
        if self.world.is_main:
            ckpt.save_checkpoint(self.out / "checkpoints", self._state(), self.step, keep=self.o.keep_checkpoints)
        barrier(self.world)

    def resume(self) -> bool:
        found = ckpt.latest_checkpoint(self.out / "checkpoints", map_location=self.device)
        if found is None:
            self.log(f"--resume: no checkpoint in {self.out / 'checkpoints'}; starting from step 0")
            return False
        state, path = found
        saved = state["options"]
        changed = [k for k in _RESUME_FIXED if json.dumps(saved.get(k)) != json.dumps(self.o.to_dict()[k])]
        if changed:
            raise ValueError(f"--resume: {path} was written with different {changed}: "
                             + ", ".join(f"{k}={saved.get(k)!r} (now {self.o.to_dict()[k]!r})" for k in changed))
        if json.dumps(state["schedule"], sort_keys=True) != json.dumps(self.schedule.to_dict(), sort_keys=True):
            raise ValueError(f"--resume: {path} was written for a different schedule (steps per epoch, phases or "
                             f"LR curve differ); start a new --out or restore the original options")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["teacher"] is not None:
            self.teacher = self._frozen_copy()
            self.teacher.load_state_dict(state["teacher"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.phase_wall, self.evals = dict(state["phase_wall"]), list(state["evals"])
        ckpt.restore_rng_state(state["rng"])
        self.log(f"resumed from {path} at step {self.step}")
        return True

    def _frozen_copy(self):
        teacher = copy.deepcopy(self.model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    # ---- logging -------------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.world.is_main:
            print(f"[deps_fast] {message}", file=sys.stderr, flush=True)

    def metric(self, record: dict) -> None:
        if not self.world.is_main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        writer = self._tensorboard()
        if writer is not None:
            if record["type"] == "step":
                scalars = {"lr": record["lr"], "beta": record["beta"], "images_per_s": record["images_per_s"],
                           **{f"loss/{k}": v for k, v in record["losses"].items()}}
            else:
                scalars = {f"top1/{k}": v for k, v in record["top1"].items()}
            for name, value in scalars.items():
                writer.add_scalar(name, value, record["step"])

    def _tensorboard(self):
        """TensorBoard event files in --out when tensorboard is installed (optional; metrics.jsonl always)."""
        if not hasattr(self, "_tb"):
            self._tb = None
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:
                pass
        return self._tb

    # ---- the loop ------------------------------------------------------------------------------------------
    def batch(self, step: int):
        epoch, index = divmod(step, self.steps_per_epoch)
        if self.folder:
            if index == 0 or not hasattr(self, "_folder_iter"):
                loader = self.data.train_loader(self.o.batch_size, self.world.rank, self.world.size, self.o.seed, epoch)
                # a resumed run skips the batches this epoch already trained on (same sampler order)
                self._folder_iter = itertools.islice(iter(loader), index, None)
            x, y = next(self._folder_iter)
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return x, y.to(self.device, non_blocking=True)
        x, y = self.train_loader.batch(epoch, index)
        return resize_batch(x, self.resize), y

    def on_phase_start(self, plan) -> None:
        phase = plan.phase
        if phase.teacher == "frozen" and self.teacher is None:
            self.teacher = self._frozen_copy()  # OFA: the trained full model, frozen, teaches every later phase
            self.log(f"step {plan.step}: froze the full model as the teacher")
        if phase.sort_channels:
            self.model.reorganize_channels(self.optimizer)
            self.log(f"step {plan.step}: channels sorted by importance (optimizer state permuted too)")

    def run(self) -> Optional[dict]:
        o = self.o
        if o.resume:
            self.resume()  # refuses a checkpoint of other options before anything is written
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(
                {"options": o.to_dict(), "schedule": self.schedule.to_dict(), "device": _device_name(self.device),
                 "world_size": self.world.size, "deps_fast": deps_fast.__version__, "torch": torch.__version__},
                indent=2))
        total = self.schedule.total_steps()
        self.log(f"{o.schedule} on {o.space} (width {o.width_mult}), data {o.data}: {total} steps "
                 f"({self.schedule.total_epochs():g} epochs of {self.steps_per_epoch}), device "
                 f"{_device_name(self.device)} x {self.world.size}, out {self.out}")
        progress = Progress(total, self.step, enabled=self.world.is_main, every=o.log_every)
        try:
            with StopRequested() as stop:
                while self.step < total:
                    if not self._one_step(stop, progress):
                        return None
            progress.close()
            if self.saved_step != self.step:
                self.save()  # the trained weights, before evaluation
            return self.finish()
        finally:
            progress.close()
            if getattr(self, "_tb", None) is not None:
                self._tb.close()

    def _one_step(self, stop: StopRequested, progress: Progress) -> bool:
        o, plan = self.o, self.schedule.plan(self.step)
        started = time.perf_counter()  # device-hours include data, augmentation and the channel sort
        if plan.phase_start:
            self.on_phase_start(plan)
        x, y = self.batch(self.step)
        micro = list(zip(x.chunk(o.accum_steps), y.chunk(o.accum_steps)))
        result = train_step(self.model, self.optimizer, plan, micro, seed=o.seed, label_smoothing=o.label_smoothing,
                            amp_dtype=self.amp_dtype, scaler=self.scaler, teacher=self.teacher,
                            sync=lambda flags: sync_step(self.model.parameters(), self.world, flags),
                            stop_requested=stop.signum is not None)
        elapsed = time.perf_counter() - started
        name = plan.phase.name
        self.phase_wall[name] = self.phase_wall.get(name, 0.0) + elapsed
        images_per_s = o.batch_size / elapsed
        self._guard(result, plan)
        self.metric({"type": "step", "step": self.step, "epoch": plan.epoch, "phase": name, "lr": plan.lr,
                     "beta": plan.beta, "losses": result.losses, "images_per_s": images_per_s,
                     "skipped": not result.finite})
        progress.update(name, plan.beta, result.losses, images_per_s)
        self.step += 1
        if self.step % self.steps_per_epoch == 0:
            self.end_of_epoch(self.step // self.steps_per_epoch)
        elif o.ckpt_every and self.step % o.ckpt_every == 0:
            self.save()
        if result.stop or (o.stop_after_steps is not None and self.step >= o.stop_after_steps):
            if self.step % self.steps_per_epoch != 0:
                self.save()
            why = "stop requested by signal" if result.stop else f"--stop-after-steps {o.stop_after_steps}"
            self.log(f"{why}: checkpoint at step {self.step} in {self.out / 'checkpoints'}; continue with --resume")
            return False
        return True

    def _guard(self, result, plan) -> None:
        if result.finite:
            self.bad_steps = 0
            return
        self.bad_steps += 1
        warnings.warn(f"step {plan.step}: non-finite loss {result.losses}; update skipped "
                      f"({self.bad_steps} in a row, limit {self.o.max_bad_steps})", RuntimeWarning)
        if self.bad_steps >= self.o.max_bad_steps:
            raise RuntimeError(f"{self.bad_steps} non-finite losses in a row (last at step {plan.step}, phase "
                               f"{plan.phase.name}, lr {plan.lr:.4g}): training diverged. Lower --lr, use "
                               f"--amp off, or raise --max-bad-steps; the last good checkpoint is in "
                               f"{self.out / 'checkpoints'}")

    def end_of_epoch(self, epoch: int) -> None:
        o = self.o
        last = self.step >= self.schedule.total_steps()
        if o.eval_every and epoch % o.eval_every == 0 and not last and self.world.is_main:
            scores = {name: self.evaluate(config) for name, config in
                      (("min", self.model.min_config()), ("max", self.model.max_config()))}
            self.evals.append({"epoch": epoch, "step": self.step, "top1": scores})
            self.metric({"type": "eval", "epoch": epoch, "step": self.step, "top1": scores})
            self.log(f"epoch {epoch}: top-1 min {scores['min']:.2f}%  max {scores['max']:.2f}%")
        self.save()

    def evaluate(self, config) -> float:
        return evaluate_subnet(self.model, config, self.calibration, self.test_batches, self.device,
                               self.amp_dtype, self.resize)

    # ---- the end -------------------------------------------------------------------------------------------
    def finish(self) -> Optional[dict]:
        if not self.world.is_main:
            shutdown(self.world)
            return None
        started = time.perf_counter()
        subnets = []
        for name, config in final_subnets(self.model):
            top1 = self.evaluate(config)
            subnets.append({"name": name, "config": config.to_dict(), "top1": top1,
                            "mflops": self.model.flops(config, self.resolution) / 1e6,
                            "params_m": self.model.params(config) / 1e6})
            self.log(f"{name:>14}: top-1 {top1:6.2f}%  {subnets[-1]['mflops']:7.1f} MFLOPs")
        report = self._report(subnets, time.perf_counter() - started)
        paths = write_report(self.out, report, compare=self.compare)
        self.log(f"report: {paths['markdown']}  (also {paths['json'].name}, {paths['pareto'].name})")
        shutdown(self.world)
        return report

    def _report(self, subnets: list, eval_s: float) -> dict:
        o, sched, world = self.o, self.schedule, self.world
        phases = []
        for i, phase in enumerate(sched.phases):
            start, end = sched.phase_bounds(i)
            wall = self.phase_wall.get(phase.name, 0.0)
            phases.append({"name": phase.name, "epochs": phase.epochs, "steps": end - start, "wall_s": wall,
                           "device_hours": wall * world.size / 3600,
                           "images_per_s": (end - start) * o.batch_size / wall if wall else 0.0})
        wall = sum(self.phase_wall.values())
        epochs = sched.total_epochs()
        return {
            "version": 1,
            "run": {"name": self.out.name, "schedule": o.schedule, "space": o.space, "data": str(o.data),
                    "device": _device_name(self.device), "world_size": world.size, "epochs": epochs,
                    "batch_size": o.batch_size, "resolution": self.resolution, "width_mult": o.width_mult,
                    "deps_fast": deps_fast.__version__, "torch": torch.__version__,
                    "command": self.command,
                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "eval_s": eval_s},
            "subnets": subnets,
            "phases": phases,
            "total": {"epochs": epochs, "steps": sched.total_steps(), "wall_s": wall,
                      "device_hours": wall * world.size / 3600,
                      "device_min_per_epoch": wall * world.size / 60 / epochs,
                      "images_per_s": sched.total_steps() * o.batch_size / wall if wall else 0.0},
            "evals": self.evals,
        }


def train(options: Options, command: Optional[str] = None) -> Optional[dict]:
    """Run one training job; returns the report (rank 0, finished) or None (other ranks, or stopped early).
    `command` is the command line recorded in the report (default: this process's arguments)."""
    trainer = Trainer(options, command)
    try:
        return trainer.run()
    finally:
        shutdown(trainer.world)


__all__ = ["Trainer", "train", "World"]
