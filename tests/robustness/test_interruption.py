"""A training process killed at any moment loses at most the epoch it was in (and the one before it when killed
while that epoch's checkpoint was still being written in the background).

* A real bundle training (``python -m monai.bundle run``, ``transfer_segmentation`` on its built-in data with tiny
  settings) is killed with SIGKILL in the middle of an epoch, after a checkpoint was written; the same command then
  resumes from that checkpoint and ends with the epoch and iteration counts of an uninterrupted run.
* A process killed while it writes a checkpoint (inside ``save_atomic``) leaves the previous checkpoint intact; the
  partial temporary file is never taken for a checkpoint and is deleted when training starts again.

The in-process counterparts (an exception mid-epoch, a failing write) are in tests/engines/test_checkpoint.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from monai_ext.engines.checkpoint import BestModelSaver, ResumableCheckpoint, remove_stale_temporaries, save_atomic
from tests.bundles.test_bundles import ROOT, _bundle_args, _bundle_copy, _bundle_run, _env, _smoke

BUNDLE = ROOT / "bundles" / "transfer_segmentation"
#: three epochs of four iterations, a checkpoint after each (the bundle's save_every_epochs is 1), no validation:
#: the test is about the training state, and validating would only make the runs longer
SETTINGS = {
    **_smoke(BUNDLE),
    "max_epochs": 3,
    "iterations_per_epoch": 4,
    "patch_size": [16, 16, 16],
    "val_interval": 1000,
    "val_at_start": False,
}
EPOCH_2 = re.compile(r"Epoch: 2/3, Iter: [1-4]/4 ")  # StatsHandler's lines of epoch 2
SAVED_1 = re.compile(r"saved training state to \S*checkpoint_epoch=1\.pt")  # logged once the write is complete


def _in_epoch_2_with_checkpoint_1(lines: list[str]) -> bool:
    """Kill in epoch 2 once checkpoint 1 is on disk: it is written in the background while epoch 2 trains, so its
    line can come after some of epoch 2's lines (and at the latest before epoch 2's own checkpoint starts)."""
    return any(SAVED_1.search(x) for x in lines) and any(EPOCH_2.search(x) for x in lines)


def _kill_when(args: list[str], cwd: Path, marker: re.Pattern | Callable[[list[str]], bool], timeout: float = 300) -> tuple[str, str]:
    """Start ``python *args``, SIGKILL it as soon as a line of its output matches ``marker`` (a pattern, or a test of
    the lines so far).

    Returns:
        (the output up to the kill, the matching line).
    """
    env = dict(_env(), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace"
    )
    watchdog = threading.Timer(timeout, proc.kill)  # never hang the test session
    watchdog.start()
    lines, hit = [], None
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker(lines) if callable(marker) else marker.search(line):
                hit = line
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        proc.wait()
        proc.stdout.close()
    out = "".join(lines)
    assert hit is not None, f"the process ended (rc {proc.returncode}) before {marker.pattern!r}:\n{out[-4000:]}"
    assert proc.returncode == -signal.SIGKILL, f"not killed by SIGKILL (rc {proc.returncode})"
    return out, hit


def _trainer_state(path: Path) -> dict:
    """Completed epochs and iterations of a checkpoint's trainer (ignite keeps the iteration and the epoch length)."""
    state = torch.load(path, map_location="cpu", weights_only=True)["trainer"]
    return {"epoch": state["iteration"] // state["epoch_length"], "iteration": state["iteration"]}


def _checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("checkpoint_epoch=*.pt"))


@pytest.mark.slow
def test_bundle_killed_mid_epoch_resumes_and_ends_like_an_uninterrupted_run(tmp_path: Path):
    # the uninterrupted run, in the background meanwhile
    reference = _bundle_copy(BUNDLE, tmp_path / "reference")
    with open(tmp_path / "reference" / "train.log", "w", encoding="utf-8") as log:
        background = subprocess.Popen(
            [sys.executable, *_bundle_args(reference, ["train.json"], SETTINGS, tmp_path / "reference", "train")],
            cwd=tmp_path / "reference", env=_env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        models = _interrupt_and_resume(tmp_path)
        background.wait(timeout=600)
    finally:
        if background.poll() is None:
            background.kill()
            background.wait()
    assert background.returncode == 0, (tmp_path / "reference" / "train.log").read_text(encoding="utf-8")[-6000:]
    expected = _trainer_state(reference / "models" / "checkpoint_epoch=3.pt")
    assert expected == {"epoch": 3, "iteration": 12}
    assert _trainer_state(models / "checkpoint_epoch=3.pt") == expected


def _interrupt_and_resume(tmp_path: Path) -> Path:
    """Train, SIGKILL mid-epoch 2, train again with the same command; returns the models folder."""
    copy = _bundle_copy(BUNDLE, tmp_path / "run")
    models = copy / "models"
    args = _bundle_args(copy, ["train.json"], SETTINGS, tmp_path / "run", "train")
    out, _ = _kill_when(args, tmp_path / "run", _in_epoch_2_with_checkpoint_1)
    # killed inside epoch 2: epoch 1's checkpoint was written (before the kill), epoch 2's never was
    assert "saved training state to" in out and "checkpoint_epoch=1.pt" in out, out[-3000:]
    assert _checkpoints(models) == ["checkpoint_epoch=1.pt"], out[-3000:]
    assert _trainer_state(models / "checkpoint_epoch=1.pt") == {"epoch": 1, "iteration": 4}

    out = _bundle_run(copy, ["train.json"], SETTINGS, tmp_path / "run", "train")  # the same command again
    resumed = re.search(r"resumed from (\S+) at epoch (\d+), iteration (\d+)", out)
    assert resumed, f"the restarted run did not resume:\n{out[-3000:]}"
    assert Path(resumed.group(1)).name == "checkpoint_epoch=1.pt" and resumed.groups()[1:] == ("1", "4")
    assert "Epoch: 1/3" not in out and "Epoch: 2/3, Iter: 1/4 " in out, "epoch 1 was trained again"
    assert _checkpoints(models) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]
    assert not [p.name for p in models.iterdir() if ".tmp" in p.name]
    return models


#: a child process that trains a tiny network for one epoch (checkpoint 1 written), then starts writing checkpoint 2
#: with a torch.save that writes part of the file and hangs, and says so: the test kills it there
_KILLED_DURING_WRITE = r"""
import sys, time
import torch
from ignite.engine import Engine, Events
from monai_ext.engines.checkpoint import ResumableCheckpoint

torch.manual_seed(0)
network = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(network.parameters(), lr=0.1)

def step(engine, batch):
    optimizer.zero_grad()
    network(torch.randn(3, 4)).pow(2).mean().backward()
    optimizer.step()

engine = Engine(step)
checkpointer = ResumableCheckpoint(sys.argv[1], {"network": network, "optimizer": optimizer})
checkpointer.attach(engine)

@engine.on(Events.EPOCH_COMPLETED(once=1))  # after ResumableCheckpoint.save of epoch 1 (attached first)
def break_torch_save(engine):
    checkpointer.wait()  # checkpoint 1 is written by the background thread: let it finish with the real torch.save
    torch.save(network.state_dict(), sys.argv[1] + "/epoch1_network.pt")  # what checkpoint 1 holds

    def partial_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 the first bytes of a checkpoint")
            fh.flush()
        print("WRITING", f, flush=True)
        time.sleep(600)

    torch.save = partial_save

engine.run(range(3), max_epochs=2)
"""


def test_kill_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path):
    out, line = _kill_when(["-c", _KILLED_DURING_WRITE, str(tmp_path)], tmp_path, re.compile(r"^WRITING "))
    partial = Path(line.split(" ", 1)[1].strip())
    assert partial.exists() and partial.name.startswith(".checkpoint_epoch=2.pt.tmp"), out
    assert not (tmp_path / "checkpoint_epoch=2.pt").exists()

    # the previous checkpoint is whole: it loads and holds epoch 1
    checkpoint = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)
    assert _trainer_state(tmp_path / "checkpoint_epoch=1.pt") == {"epoch": 1, "iteration": 3}
    expected = torch.load(tmp_path / "epoch1_network.pt", weights_only=True)
    for k, v in expected.items():
        torch.testing.assert_close(checkpoint["network"][k], v)

    # a new run resumes from it, not from the partial file, and deletes the partial file on start
    network = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    engine = Engine(lambda e, b: optimizer.step())
    checkpointer = ResumableCheckpoint(str(tmp_path), {"network": network, "optimizer": optimizer})
    assert [Path(p).name for p in checkpointer.checkpoints()] == ["checkpoint_epoch=1.pt"]
    checkpointer.attach(engine)
    engine.state.max_epochs = 2
    checkpointer.load_latest(engine)
    assert not partial.exists()
    assert (engine.state.epoch, engine.state.iteration) == (1, 3)
    for k, v in expected.items():
        torch.testing.assert_close(network.state_dict()[k], v)
    engine.run(range(3), max_epochs=2)
    assert (engine.state.epoch, engine.state.iteration) == (2, 6)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("checkpoint", "."))) == [
        "checkpoint_epoch=1.pt",
        "checkpoint_epoch=2.pt",
    ]


def test_only_temporaries_of_dead_processes_are_removed(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a process id that no longer runs
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        save_atomic({"w": torch.ones(1)}, str(tmp_path / "model.pt"))
        stale = tmp_path / f".model.pt.tmp{dead.pid}"
        busy = tmp_path / f".model.pt.tmp{alive.pid}"
        other = tmp_path / f".other.pt.tmp{dead.pid}"
        for p in (stale, busy, other):
            p.write_bytes(b"partial")
        assert remove_stale_temporaries(str(tmp_path / "model.pt")) == [str(stale)]
        assert busy.exists() and other.exists() and (tmp_path / "model.pt").exists()

        # BestModelSaver cleans its model file's temporaries when it is attached (at the start of a run)
        stale.write_bytes(b"partial")
        saver = BestModelSaver(torch.nn.Linear(1, 1), str(tmp_path / "model.pt"), "dice")
        saver.attach(Engine(lambda e, b: None))
        assert not stale.exists() and busy.exists()
    finally:
        alive.kill()
        alive.wait()
