"""deps_fast.trainer.checkpoint: round trips, atomic writes, pruning, corruption detection and fallback, RNG."""
import os
import random
import warnings

import numpy as np
import pytest
import torch

from deps_fast.trainer.checkpoint import (HEADER, MAGIC, CorruptCheckpoint, capture_rng_state, checkpoint_path,
                                          latest_checkpoint, list_checkpoints, load_checkpoint, restore_rng_state,
                                          save_checkpoint)


def training_state(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    model(torch.randn(16, 4)).square().mean().backward()
    optimizer.step()  # fills the momentum buffers
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
            "nested": {"history": [1.5, 2.5], "name": "dεps", "flags": (True, None), "t": torch.arange(5)}}


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_round_trip(tmp_path):
    state = training_state()
    path = save_checkpoint(tmp_path / "run", state, step=120)
    assert path == tmp_path / "run" / "ckpt-000000120.pt" == checkpoint_path(tmp_path / "run", 120)
    assert_same(load_checkpoint(path), state)
    raw = path.read_bytes()
    assert raw[:8] == MAGIC and int.from_bytes(raw[40:48], "little") == len(raw) - HEADER.size == len(raw) - 64


def test_loaded_optimizer_state_resumes_training(tmp_path):
    state = training_state()
    loaded = load_checkpoint(save_checkpoint(tmp_path, state, step=1))
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    model.load_state_dict(loaded["model"])
    optimizer.load_state_dict(loaded["optimizer"])
    assert_same(optimizer.state_dict(), state["optimizer"])


def test_latest_picks_the_highest_step(tmp_path):
    for step in (5, 40, 7):  # written out of order: the step number decides, not the write time
        save_checkpoint(tmp_path, {"step": step}, step=step, keep=10)
    state, path = latest_checkpoint(tmp_path)
    assert state == {"step": 40} and path.name == "ckpt-000000040.pt"


def test_no_checkpoint_gives_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None


def test_keep_last_n(tmp_path):
    for step in range(1, 7):
        save_checkpoint(tmp_path, {"step": step}, step=step, keep=3)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [6, 5, 4]


def test_pruning_never_deletes_the_file_just_written(tmp_path):
    for step in (100, 200, 300):
        save_checkpoint(tmp_path, {"step": step}, step=step, keep=2)
    path = save_checkpoint(tmp_path, {"step": 150}, step=150, keep=2)  # e.g. a run restarted from an old step
    assert path.exists()


def test_pruning_does_not_count_corrupt_files(tmp_path):
    for step in (1, 2):
        save_checkpoint(tmp_path, {"step": step}, step=step, keep=2)
    checkpoint_path(tmp_path, 3).write_bytes(b"garbage")
    save_checkpoint(tmp_path, {"step": 4}, step=4, keep=2)
    # two good ones kept; 3 is garbage, neither counted nor deleted (it may be recoverable by hand)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 3, 2]


def test_pruning_never_deletes_files_of_other_runs_or_foreign_files(tmp_path):
    mine, other = b"A" * 16, b"B" * 16
    save_checkpoint(tmp_path, {"step": 1}, step=1, run_id=other)
    torch.save({"not": "ours"}, checkpoint_path(tmp_path, 99))  # a foreign file named like a checkpoint
    for step in (2, 3, 4):
        save_checkpoint(tmp_path, {"step": step}, step=step, keep=1, run_id=mine)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [99, 4, 1]


def test_a_crashed_write_leaves_only_a_temp_file_that_is_never_picked_up(tmp_path):
    save_checkpoint(tmp_path, {"step": 1}, step=1)
    # What a writer killed mid-write leaves behind: a partial temporary file.
    partial = tmp_path / ".ckpt-crash.tmp"
    partial.write_bytes(MAGIC + b"\0" * 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the temp file is not even looked at, so no warning either
        state, path = latest_checkpoint(tmp_path)
    assert state == {"step": 1} and [s for s, _ in list_checkpoints(tmp_path)] == [1]
    save_checkpoint(tmp_path, {"step": 2}, step=2)
    assert not partial.exists()  # the next save cleans up after the crash


def test_a_failing_serialization_leaves_nothing_behind(tmp_path):
    save_checkpoint(tmp_path, {"step": 1}, step=1)
    with pytest.raises(Exception):
        save_checkpoint(tmp_path, {"unpicklable": lambda: None}, step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000001.pt"]


def test_failing_write_removes_its_temp_file(tmp_path, monkeypatch):
    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, {"step": 1}, step=1)
    assert list(tmp_path.iterdir()) == []


def test_truncated_newest_falls_back_with_a_warning(tmp_path):
    save_checkpoint(tmp_path, {"step": 1}, step=1)
    newest = save_checkpoint(tmp_path, {"step": 2, "big": torch.zeros(1000)}, step=2)
    newest.write_bytes(newest.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpoint, match="truncated"):
        load_checkpoint(newest)
    with pytest.warns(RuntimeWarning, match=r"ckpt-000000002\.pt.*truncated"):
        state, path = latest_checkpoint(tmp_path)
    assert state == {"step": 1} and path.name == "ckpt-000000001.pt"


@pytest.mark.parametrize("where", ["magic", "hash", "length", "payload"])
def test_a_flipped_byte_is_detected(tmp_path, where):
    path = save_checkpoint(tmp_path, {"w": torch.arange(100)}, step=1)
    raw = bytearray(path.read_bytes())
    position = {"magic": 3, "hash": 20, "length": 41, "payload": len(raw) // 2}[where]
    raw[position] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpoint) as caught:
        load_checkpoint(path)
    assert caught.value.path == path and str(path) in str(caught.value)
    assert isinstance(caught.value, RuntimeError)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all, but long enough to hold a header" * 2])
def test_garbage_with_a_checkpoint_name_is_detected(tmp_path, content):
    save_checkpoint(tmp_path, {"step": 1}, step=1)
    checkpoint_path(tmp_path, 9).write_bytes(content)
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(checkpoint_path(tmp_path, 9))
    with pytest.warns(RuntimeWarning, match="ckpt-000000009"):
        state, _ = latest_checkpoint(tmp_path)
    assert state == {"step": 1}


def test_all_corrupt_gives_none_with_warnings(tmp_path):
    checkpoint_path(tmp_path, 1).write_bytes(b"x" * 100)
    with pytest.warns(RuntimeWarning):
        assert latest_checkpoint(tmp_path) is None


def test_corrupt_checkpoint_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(CorruptCheckpoint("/a/b.pt", "why")))
    assert (str(error.path), error.reason) == ("/a/b.pt", "why")


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="step must be an integer >= 0, got -1"):
        save_checkpoint(tmp_path, {}, step=-1)
    with pytest.raises(ValueError, match="keep must be an integer >= 1, got 0"):
        save_checkpoint(tmp_path, {}, step=1, keep=0)
    with pytest.raises(TypeError, match="state must be a dict, got list"):
        save_checkpoint(tmp_path, [], step=1)


def draws():
    return (random.random(), float(np.random.rand()), torch.rand(3), torch.randint(0, 10**6, (2,)))


def test_rng_capture_restore_repeats_the_draws(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    draws()
    captured = capture_rng_state()
    expected = draws()
    path = save_checkpoint(tmp_path, {"rng": captured}, step=1)  # survives a checkpoint round trip too
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    restore_rng_state(load_checkpoint(path)["rng"])
    assert_same(draws(), expected)


def test_restore_rejects_a_foreign_dict():
    with pytest.raises(ValueError, match=r"rng state lacks \['numpy', 'torch'\]"):
        restore_rng_state({"python": random.getstate()})
