"""The training run: setup, resume, the step loop, checkpoints, evaluation and the report.

`train(options)` is what `python -m deps_fast.train` calls. Everything the loop decides per step comes
from the schedule's StepPlan; everything it needs to continue exactly is in the checkpoint.
"""
from __future__ import annotations

import copy
import json
import math
import signal
import statistics
import sys
import time
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

import deps_fast
from deps_fast._util import atomic_write, device_name, prefers_channels_last
from deps_fast.models import build_supernet
from deps_fast.ops import _backend
from deps_fast.trainer import checkpoint as ckpt
from deps_fast.trainer import rundir
from deps_fast.trainer.datasets import load_dataset
from deps_fast.trainer.loaders import BadImage
from deps_fast.trainer.distributed import World, all_agree, barrier, init_world, shutdown, sync_step
from deps_fast.trainer.evaluate import evaluate_subnet, final_subnets
from deps_fast.trainer.options import Options, build_schedule
from deps_fast.trainer.progress import MetricsLog, Progress
from deps_fast.trainer.report import Report, RunInfo, SubnetResult, load_report, write_report
from deps_fast.trainer.step import parameter_groups, train_step


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and exits."""

    def __init__(self):
        self.signum: Optional[int] = None
        self.time = 0.0  # time.monotonic() of the first signal
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
        self.signum, self.time = signum, time.monotonic()
        print(f"\n[deps_fast] signal {signum}: finishing the step, then checkpointing", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _default_out(o: Options) -> Path:
    return Path(f"runs/{o.schedule}-{o.space}-{Path(str(o.data)).name}")


class DivergedError(RuntimeError):
    """Training diverged; the message is one paragraph saying where, what was kept and how to go on."""


class SaveError(RuntimeError):
    """The trained weights could not be saved at the end of training (disk full, permissions)."""


def _finite(module) -> bool:
    """Whether every parameter is finite (BN running statistics are not checked: evaluation recalibrates them,
    and the forward passes of skipped steps may have updated them with non-finite batches)."""
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def _json_safe(value):
    """NaN and infinities as null: metrics.jsonl stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class Trainer:
    """One training run of a supernet under one schedule, from options to report.

    Construction is the setup, where a user's mistakes surface (options, data, backend, a checkpoint written
    with other options): it builds the data, the supernet, the optimizer and the schedule, and with --resume
    loads the newest good checkpoint. `run()` then trains step by step as the schedule's plans say,
    checkpoints every epoch (and every `ckpt_every` steps), evaluates, and writes the report. Everything
    needed to continue exactly is in `state_dict()`; `load_state_dict()` restores it.
    """

    def __init__(self, options: Options, command: Optional[str] = None):
        o = self.options = options
        self.command = command or "python -m deps_fast.train " + " ".join(sys.argv[1:])
        self.world, self.device = init_world(o.device)
        self.backend = _backend.resolve(o.backend, self.device, lambda name: None)  # fails early and clearly
        self.amp_dtype = _amp_dtype(o.amp, self.device)
        self.out = rundir.resolve_folder(o.out, _default_out(o), o.resume)
        lock_error = None
        try:
            self.lock = rundir.RunLock(self.out) if self.world.is_main else None  # one trainer per folder
        except ValueError as exc:
            self.lock, lock_error = None, exc
        if not all_agree(self.world, lock_error is None):
            raise lock_error or ValueError(f"rank 0 could not lock the run folder {self.out} (its message says why)")
        try:
            refusal = None
            if self.world.is_main:
                try:
                    rundir.prepare(self.out, resume=o.resume, overwrite=o.overwrite)
                except ValueError as exc:
                    refusal = exc
            if not all_agree(self.world, refusal is None):
                raise refusal or ValueError(f"rank 0 refused the run folder {self.out} (its message says why)")
            self._build(o)
        except BaseException:
            self.close()  # a setup failure releases the folder at once
            raise

    def _build(self, o: Options) -> None:
        self.channels_last = prefers_channels_last(self.device)
        torch.manual_seed(o.seed)  # identical initial weights on every rank
        self.data = load_dataset(o.data, resolution=o.resolution, num_workers=o.workers, augment=o.augment,
                                 skip_bad_images=o.skip_bad_images)
        self.resolution = self.data.resolution
        self.model = build_supernet(o.space, self.data.num_classes, o.width_mult, o.resolved_kernel_sizes(),
                                    o.expand_ratios, o.depths, dropout=o.dropout, in_channels=self.data.in_channels)
        self.model.to(self.device).set_backend(o.backend)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, o.weight_decay), lr=o.lr,
                                         momentum=o.momentum, nesterov=o.momentum > 0)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        per_rank = o.batch_size // self.world.size
        if per_rank % o.accum_steps:
            raise ValueError(f"batch_size={o.batch_size} gives {per_rank} images per rank, not a multiple of "
                             f"accum_steps={o.accum_steps}")
        self.train_loader = self.data.train_loader(o.batch_size, device=self.device, rank=self.world.rank,
                                                   world_size=self.world.size, seed=o.seed,
                                                   channels_last=self.channels_last,
                                                   elastic_resolution=o.elastic_resolution)
        self.steps_per_epoch = len(self.train_loader)
        self.schedule = build_schedule(o, self.steps_per_epoch)
        self.compare = [load_report(path) for path in o.compare]  # a bad --compare fails now, not after training
        # built once: every evaluation reads the same device copies
        self.test_batches = self.data.test_loader(o.eval_batch, device=self.device, channels_last=self.channels_last)
        self.calibration = self.data.calibration_batches(n_images=o.calib_images, batch_size=o.calib_batch,
                                                         seed=o.seed, device=self.device,
                                                         channels_last=self.channels_last)
        self.step, self.teacher, self.bad_steps, self.saved_step = 0, None, 0, None
        self.skipped_steps = 0  # steps whose update was not applied (non-finite or a loss spike), all runs long
        self.accepted_losses: dict = {}  # loss name -> its values at the last 20 applied steps (spike threshold)
        self.phase_wall: dict[str, float] = {}
        self.evals: list[dict] = []
        self.run_id = uuid.uuid4().bytes  # stamps this run's checkpoints (a resumed run takes its checkpoint's)
        self.lr_history: list[dict] = [{"step": 0, "lr": o.lr}]  # --lr changes made on --resume
        self.skipped_images: list[str] = []
        self.good_checkpoint: Optional[Path] = None
        self.save_failed = False
        if o.resume:
            self.resume()  # refuses a checkpoint of other options before anything is written

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly (and the options it must match)."""
        return {"version": deps_fast.__version__, "step": self.step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "teacher": None if self.teacher is None else self.teacher.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
                "rng": ckpt.capture_rng_state(), "phase_wall": dict(self.phase_wall), "evals": list(self.evals),
                "bad_steps": self.bad_steps, "skipped_steps": self.skipped_steps,
                "accepted_losses": dict(self.accepted_losses),
                "options": self.options.to_dict(), "schedule": self.schedule.to_dict(),
                "run_id": self.run_id.hex(), "lr_history": list(self.lr_history),
                "skipped_images": self._skipped()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict()` saved (the caller has checked that the options match)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.teacher = None
        if state["teacher"] is not None:
            self.teacher = self._frozen_copy()
            self.teacher.load_state_dict(state["teacher"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.skipped_steps = state.get("skipped_steps", 0)
        self.accepted_losses = dict(state.get("accepted_losses", {}))
        self.phase_wall, self.evals = dict(state["phase_wall"]), list(state["evals"])
        self.run_id = bytes.fromhex(state["run_id"]) if state.get("run_id") else self.run_id
        self.lr_history = list(state.get("lr_history", self.lr_history))
        self.skipped_images = list(state.get("skipped_images", []))
        ckpt.restore_rng_state(state["rng"])

    def save(self, final: bool = False) -> None:
        """Checkpoint the state (rank 0 writes). Never saves non-finite weights, nor during a streak of skipped
        non-finite steps (the last good checkpoint must not be rotated out). A failed write (disk full) is
        reported with the path and the space and training goes on, retrying at the next interval; a failed
        `final` save raises SaveError."""
        if self.bad_steps and not final:
            # skipped steps change nothing, but the last applied step may be the harmful one: keep the older
            # checkpoints from being rotated out until the run is healthy again
            self.log(f"step {self.step}: no checkpoint during a streak of skipped steps; the last good one "
                     f"stays {self.good_checkpoint or 'none (nothing saved yet)'}")
            return
        if not _finite(self.model):
            raise DivergedError(self._diverged_message("the weights became non-finite"))
        self.saved_step = self.step
        failure = None
        if self.world.is_main:
            try:
                self.good_checkpoint = ckpt.save_checkpoint(self.out / "checkpoints", self.state_dict(), self.step,
                                                            keep=self.options.keep_checkpoints, run_id=self.run_id)
                self.save_failed = False
            except ckpt.SaveFailed as exc:
                failure, self.save_failed, self.saved_step = exc, True, None
                kept = f"the previous checkpoint {self.good_checkpoint} is intact" if self.good_checkpoint else \
                    "no checkpoint of this run exists yet"
                warnings.warn(f"{exc}; {kept}; training goes on and saving is retried at the next checkpoint",
                              RuntimeWarning)
        barrier(self.world)
        if failure is not None and final:
            again = (f"rerun the same command with --resume (it continues from {self.good_checkpoint})"
                     if self.good_checkpoint else "rerun the same command with --overwrite (nothing was saved)")
            raise SaveError(f"the trained weights could not be saved: {failure}. Free space and {again}.")

    def resume(self) -> bool:
        """Load the newest good checkpoint of --out. Refuses (ValueError, exit 2) a folder without one, listing
        every file and why it was rejected, and a checkpoint written with other fixed options or for another
        schedule; a changed --lr is allowed with a warning and recorded."""
        state, path, rejected = ckpt.newest_checkpoint(self.out / "checkpoints", map_location=self.device)
        if state is None:
            if rejected:
                raise ValueError(f"--resume: no usable checkpoint in {self.out / 'checkpoints'}; nothing was "
                                 f"deleted. Rejected: " + "; ".join(f"{p.name}: {why}" for p, why in rejected))
            raise ValueError(f"--resume: nothing to resume in {self.out} (no checkpoint); run without --resume to "
                             f"start, or point --out at the run to continue")
        saved = state["options"]
        changed = self.options.changed_since(saved)
        if changed:
            now = self.options.to_dict()
            raise ValueError(f"--resume: {path} was written with different {changed}: "
                             + ", ".join(f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in changed))
        if _schedule_shape(state["schedule"]) != _schedule_shape(self.schedule.to_dict()):
            raise ValueError(f"--resume: {path} was written for a different schedule (steps per epoch, phases or "
                             f"LR curve differ); start a new --out or restore the original options")
        self.load_state_dict(state)
        for name in self.options.changed_since(saved, self.options.changeable_on_resume()):
            warnings.warn(f"--resume: {name} changed from {saved.get(name)!r} to {getattr(self.options, name)!r} "
                          f"at step {self.step}; recorded in config.json and the report", RuntimeWarning)
            if name == "lr":
                self.lr_history.append({"step": self.step, "lr": self.options.lr})
        self.good_checkpoint = path
        if self.world.is_main:
            _drop_metrics_after(self.out / "metrics.jsonl", self.step)
        self.log(f"resumed from {path} at step {self.step}")
        return True

    def _skipped(self) -> list:
        """Unreadable training images skipped so far, this process's and those a resumed checkpoint recorded."""
        return sorted(set(self.skipped_images) | set(self.train_loader.skipped_files))

    def _frozen_copy(self):
        teacher = copy.deepcopy(self.model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    # ---- logging -------------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.world.is_main:
            print(f"[deps_fast] {message}", file=sys.stderr, flush=True)

    # ---- the loop ------------------------------------------------------------------------------------------
    def batch(self, step: int):
        """The (x, y) of global step `step` for this rank."""
        return self.train_loader.batch(*divmod(step, self.steps_per_epoch))

    def on_phase_start(self, plan) -> None:
        phase = plan.phase
        if phase.teacher == "frozen" and self.teacher is None:
            self.teacher = self._frozen_copy()  # OFA: the trained full model, frozen, teaches every later phase
            self.log(f"step {plan.step}: froze the full model as the teacher")
        if phase.sort_channels:
            self.model.reorganize_channels(self.optimizer, stage=phase.sort_stage)
            self.log(f"step {plan.step}: channels sorted by importance at stage {phase.sort_stage} (optimizer "
                     f"state permuted too)")

    def run(self) -> Optional[dict]:
        """Train to the end of the schedule, evaluate and write the report; returns the report as a dict on
        rank 0 (None on other ranks, or when stopped early by a signal or --stop-after-steps)."""
        o = self.options
        if self.world.is_main:
            atomic_write(self.out / "config.json", json.dumps(
                {"options": o.to_dict(), "schedule": self.schedule.to_dict(), "device": device_name(self.device),
                 "world_size": self.world.size, "deps_fast": deps_fast.__version__, "torch": torch.__version__,
                 "run_id": self.run_id.hex(), "lr_history": self.lr_history}, indent=2).encode())
        total = self.schedule.total_steps()
        self.log(f"{o.schedule} on {o.space} (width {o.width_mult}), data {o.data}: {total} steps "
                 f"({self.schedule.total_epochs():g} epochs of {self.steps_per_epoch}), device "
                 f"{device_name(self.device)} x {self.world.size}, out {self.out}")
        progress = Progress(total, self.step, enabled=self.world.is_main, every=o.log_every)
        self.metrics = MetricsLog(self.out, enabled=self.world.is_main)
        try:
            with StopRequested() as stop:
                while self.step < total:
                    if not self._one_step(stop, progress):
                        return None
            progress.close()
            if self.saved_step != self.step:
                self.save(final=True)  # the trained weights, before evaluation
            return self.finish()
        finally:
            progress.close()
            self.metrics.close()
            self.close()

    def close(self) -> None:
        """Release the run folder (the lock); the process exiting releases it too."""
        if self.lock is not None:
            self.lock.release()

    def _one_step(self, stop: StopRequested, progress: Progress) -> bool:
        o, plan = self.options, self.schedule.plan(self.step)
        started = time.perf_counter()  # device-hours include data, augmentation and the channel sort
        if plan.phase_start:
            self.on_phase_start(plan)
        try:
            x, y = self.batch(self.step)
        except BadImage:
            self.save()  # the state before this step is consistent: nothing trained is lost
            raise
        micro = list(zip(x.chunk(o.accum_steps), y.chunk(o.accum_steps)))
        result = train_step(self.model, self.optimizer, plan, micro, seed=o.seed, label_smoothing=o.label_smoothing,
                            amp_dtype=self.amp_dtype, scaler=self.scaler, teacher=self.teacher,
                            sync=lambda flags: sync_step(self.model.parameters(), self.world, flags),
                            stop_requested=lambda: stop.signum is not None, max_loss=self._spike_threshold())
        elapsed = time.perf_counter() - started
        name = plan.phase.name
        self.phase_wall[name] = self.phase_wall.get(name, 0.0) + elapsed
        images_per_s = o.batch_size / elapsed
        self.metrics.write(_json_safe({"type": "step", "step": self.step, "epoch": plan.epoch, "phase": name,
                                       "lr": plan.lr, "beta": plan.beta, "losses": result.losses,
                                       "grad_norm": result.grad_norm, "images_per_s": images_per_s,
                                       "skipped": not result.finite}))
        self._guard(result, plan)
        progress.update(name, plan.beta, result.losses, images_per_s)
        self.step += 1
        # One process acts on a signal right after the step it arrived in; ranks act on the flag their
        # all-reduce carried, so they all stop after the same step.
        stop_now = result.stop or (self.world.size == 1 and stop.signum is not None)
        if self.step % self.steps_per_epoch == 0:
            self.end_of_epoch(self.step // self.steps_per_epoch)
        elif o.ckpt_every and self.step % o.ckpt_every == 0:
            self.save()
        if stop_now or (o.stop_after_steps is not None and self.step >= o.stop_after_steps):
            if self.saved_step != self.step:
                self.save(final=True)
            why = (f"stop requested by signal ({time.monotonic() - stop.time:.1f} s from the signal to the "
                   f"checkpoint)" if stop_now else f"--stop-after-steps {o.stop_after_steps}")
            self.log(f"{why}: checkpoint at step {self.step} in {self.out / 'checkpoints'}; continue with --resume")
            return False
        return True

    def _spike_threshold(self) -> dict:
        """{loss name: the value above which that loss counts as a blow-up}: --spike-factor times the median of
        the name's last 20 applied values, and at least 2 ln(classes) (twice a uniform guess's cross-entropy), so
        ordinary noise late in training never trips it. Per name, because a subnet's loss is rightly far above
        the max net's when shrinking starts; a name without history (a new phase's subnets) has no limit."""
        factor, floor = self.options.spike_factor, 2 * math.log(self.data.num_classes)
        if not factor:
            return {}
        return {name: max(factor * statistics.median(values), floor)
                for name, values in self.accepted_losses.items() if values}

    def _guard(self, result, plan) -> None:
        if result.finite:
            self.bad_steps = 0
            for name, value in result.losses.items():
                self.accepted_losses[name] = (self.accepted_losses.get(name, []) + [value])[-20:]
            return
        self.bad_steps += 1
        self.skipped_steps += 1
        warnings.warn(f"step {plan.step}: non-finite or exploding loss or gradient (losses {result.losses}, "
                      f"gradient norm {result.grad_norm:.3g}, spike thresholds {self._spike_threshold()}); update "
                      f"skipped ({self.bad_steps} in a row, limit {self.options.max_bad_steps})", RuntimeWarning)
        if self.bad_steps >= self.options.max_bad_steps:
            raise DivergedError(self._diverged_message(
                f"{self.bad_steps} skipped steps in a row (non-finite or exploding loss or gradient; the warnings "
                f"above give the values), the last at step {plan.step} (phase "
                f"{plan.phase.name}, lr {plan.lr:.4g}); none of those updates was applied"))

    def _diverged_message(self, what: str) -> str:
        lower = self.options.lr / 10
        if self.good_checkpoint is None:
            return (f"training diverged: {what}. No checkpoint of this run was saved yet (non-finite weights are "
                    f"never saved or evaluated): start again with a lower learning rate, the same command with "
                    f"--overwrite --lr {lower:.3g}; or raise --max-bad-steps / --spike-factor if isolated bad "
                    f"batches are expected.")
        return (f"training diverged: {what}. The last good checkpoint is {self.good_checkpoint} (non-finite "
                f"weights are never saved or evaluated). Continue it with a lower learning rate: the same command "
                f"with --resume --lr {lower:.3g} (a changed --lr is allowed on --resume and recorded in config.json "
                f"and the report); or raise --max-bad-steps / --spike-factor if isolated bad batches are expected.")

    def end_of_epoch(self, epoch: int) -> None:
        o = self.options
        last = self.step >= self.schedule.total_steps()
        if o.eval_every and epoch % o.eval_every == 0 and not last and self.world.is_main and not self.bad_steps:
            scores = {name: self.evaluate(config) for name, config in
                      (("min", self.model.min_config()), ("max", self.model.max_config()))}
            self.evals.append({"epoch": epoch, "step": self.step, "top1": scores})
            self.metrics.write({"type": "eval", "epoch": epoch, "step": self.step, "top1": scores})
            self.log(f"epoch {epoch}: top-1 min {scores['min']:.2f}%  max {scores['max']:.2f}%")
        self.save()

    def evaluate(self, config) -> float:
        if not _finite(self.model):
            raise DivergedError(self._diverged_message("the weights are non-finite, so nothing can be evaluated"))
        return evaluate_subnet(self.model, config, self.calibration, self.test_batches, self.device, self.amp_dtype)

    # ---- the end -------------------------------------------------------------------------------------------
    def finish(self) -> Optional[dict]:
        if not self.world.is_main:
            shutdown(self.world)
            return None
        started = time.perf_counter()
        subnets = []
        for name, config in final_subnets(self.model):
            top1 = self.evaluate(config)
            subnets.append(SubnetResult(name, self.model.flops(config, self.resolution) / 1e6,
                                        self.model.params(config) / 1e6, top1, config.to_dict()))
            self.log(f"{name:>14}: top-1 {top1:6.2f}%  {subnets[-1].mflops:7.1f} MFLOPs")
        report = self.report(subnets, time.perf_counter() - started)
        paths = write_report(self.out, report, compare=self.compare)
        self.log(f"report: {paths['markdown']}  (also {paths['json'].name}, {paths['pareto'].name})")
        shutdown(self.world)
        return report.to_dict()

    def report(self, subnets: list, eval_s: float) -> Report:
        o, sched = self.options, self.schedule
        run = RunInfo(name=self.out.name, schedule=o.schedule, space=o.space, data=str(o.data),
                      device=device_name(self.device), world_size=self.world.size, epochs=sched.total_epochs(),
                      batch_size=o.batch_size, resolution=self.resolution, width_mult=o.width_mult,
                      deps_fast=deps_fast.__version__, torch=torch.__version__, command=self.command,
                      finished=datetime.now(timezone.utc).isoformat(timespec="seconds"), eval_s=eval_s,
                      lr=o.lr, lr_changes=_lr_changes(self.lr_history), skipped_images=len(self._skipped()),
                      skipped_steps=self.skipped_steps,
                      full_epochs=o.resolved_full_epochs(), augment=o.augment,
                      training_resolution=o.resolution_policy(), sort_stages=_sort_stages(sched))
        walls = []
        for index, phase in enumerate(sched.phases):
            start, end = sched.phase_bounds(index)
            walls.append((phase.name, phase.epochs, end - start, self.phase_wall.get(phase.name, 0.0)))
        return Report.from_training(run, subnets, walls, o.batch_size, self.world.size, self.evals)


def _lr_changes(history: list) -> Optional[str]:
    if len(history) < 2:
        return None
    return ", ".join(f"{a['lr']:g} -> {b['lr']:g} at step {b['step']}" for a, b in zip(history, history[1:]))


def _schedule_shape(schedule: dict) -> str:
    """A schedule's description without its learning rates (--lr may change on --resume)."""
    phases = [{k: v for k, v in p.items() if k != "lr"} for p in schedule["phases"]]
    return json.dumps({**schedule, "phases": phases}, sort_keys=True)


def _drop_metrics_after(path: Path, step: int) -> None:
    """A resumed run replays from `step`: drop the records of later steps (those the checkpoint does not hold)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if record.get("step", 0) < step or (record.get("type") == "eval" and record.get("step", 0) <= step):
            kept.append(line)
    atomic_write(path, ("\n".join(kept) + "\n" if kept else "").encode())


def _sort_stages(schedule) -> str:
    """Where the channel sort ran, e.g. "eps_ramp: stage 1" or "expand_46: stage 0, expand_346: stage 1"."""
    return ", ".join(f"{p.name}: stage {p.sort_stage}" for p in schedule.phases if p.sort_channels) or "none"


def train(options: Options, command: Optional[str] = None) -> Optional[dict]:
    """Run one training job; returns the report (rank 0, finished) or None (other ranks, or stopped early).
    `command` is the command line recorded in the report (default: this process's arguments)."""
    trainer = Trainer(options, command)
    try:
        return trainer.run()
    finally:
        shutdown(trainer.world)


__all__ = ["Trainer", "train", "World"]
