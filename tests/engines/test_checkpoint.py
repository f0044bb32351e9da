"""Interrupted training resumes from its last checkpoint and ends where an uninterrupted run ends."""

import json

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer, SupervisedEvaluator

from monai_ext.engines.checkpoint import BestModelSaver, ResumableCheckpoint, save_atomic


class Interrupt(RuntimeError):
    pass


def _make(tmp_path, max_epochs, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    g = torch.Generator().manual_seed(123)
    data = [{"image": torch.randn(2, 4, generator=g), "label": torch.randn(2, 1, generator=g)} for _ in range(5)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=max_epochs, train_data_loader=data, network=net, optimizer=opt,
        loss_function=torch.nn.MSELoss(), amp=False,
    )  # fmt: skip
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: sched.step())
    ckpt = ResumableCheckpoint(
        str(tmp_path), {"network": net, "optimizer": opt, "lr_scheduler": sched}, n_saved=2
    )
    ckpt.attach(trainer)
    return trainer, net, ckpt


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    ref_trainer, ref_net, _ = _make(tmp_path / "ref", max_epochs=4)
    ref_trainer.run()

    trainer, _, ckpt = _make(tmp_path / "run", max_epochs=4)

    @trainer.on(Events.ITERATION_COMPLETED)
    def crash(engine):
        if engine.state.epoch == 3 and engine.state.iteration == 12:  # mid-epoch 3
            raise Interrupt()

    with pytest.raises(Interrupt):
        trainer.run()
    ckpt.wait()  # epoch 2's checkpoint may still be in the background writer: it completes all the same
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]

    # a fresh process: new objects, different initial weights, same command
    trainer2, net2, _ = _make(tmp_path / "run", max_epochs=4, seed=99)
    trainer2.run()
    assert trainer2.state.epoch == 4 and trainer2.state.iteration == 4 * 5
    for a, b in zip(ref_net.state_dict().values(), net2.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt"]


def test_resume_false_starts_over(tmp_path):
    trainer, _, _ = _make(tmp_path, max_epochs=1)
    trainer.run()
    trainer2, _, ckpt = _make(tmp_path, max_epochs=1)
    ckpt.resume = ResumableCheckpoint(str(tmp_path), {}, resume="false").resume
    assert ckpt.resume is False
    trainer2.run()
    assert trainer2.state.iteration == 5


def test_corrupt_checkpoint_is_reported(tmp_path):
    trainer, _, _ = _make(tmp_path, max_epochs=1)
    trainer.run()
    (tmp_path / "checkpoint_epoch=1.pt").write_bytes(b"not a checkpoint")
    trainer2, _, _ = _make(tmp_path, max_epochs=2)
    with pytest.raises(RuntimeError, match="checkpoint_epoch=1.pt"):
        trainer2.run()


def test_checkpoint_of_another_network_is_reported_with_its_file(tmp_path):
    trainer, _, _ = _make(tmp_path, max_epochs=1)
    trainer.run()
    trainer2, net2, ckpt = _make(tmp_path, max_epochs=2)
    wider = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    ckpt.objects["network"] = wider  # the user changed the network, then resumed in the same folder
    with pytest.raises(RuntimeError, match=r"(?s)checkpoint_epoch=1\.pt does not fit this run .*resume=False"):
        trainer2.run()


def _one_epoch_engine(tmp_path, background=True):  # background written out: "auto" depends on the machine
    from ignite.engine import Engine

    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    engine = Engine(lambda e, b: None)
    ckpt = ResumableCheckpoint(str(tmp_path), {"network": net}, background=background)
    ckpt.attach(engine)
    return engine, net, ckpt


def test_background_write_holds_the_state_of_its_epoch(tmp_path, monkeypatch):
    """The writer thread writes what the network was at the end of the epoch, not what training made of it since."""
    import threading

    from monai_ext.engines import checkpoint

    release, real_save = threading.Event(), checkpoint.save_atomic

    def held_save(obj, path):  # the write starts only after the weights below have changed
        assert release.wait(30)
        real_save(obj, path)

    monkeypatch.setattr(checkpoint, "save_atomic", held_save)
    engine, net, ckpt = _one_epoch_engine(tmp_path)
    engine.state.max_epochs, engine.state.epoch = 1, 1
    ckpt.save(engine)  # returns before the file is written
    assert not (tmp_path / "checkpoint_epoch=1.pt").exists()
    with torch.no_grad():
        net.weight.fill_(5.0)  # the next epoch trains
    release.set()
    ckpt.wait()
    saved = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)
    torch.testing.assert_close(saved["network"]["weight"], torch.ones(1, 2))
    assert set(saved) == {"network", "trainer"}


def test_failed_background_write_stops_training_with_the_folder_named(tmp_path, monkeypatch):
    from monai_ext.engines import checkpoint

    engine, _, _ = _one_epoch_engine(tmp_path)
    engine.run(range(2), max_epochs=1)  # checkpoint 1, written in the background, waited for at COMPLETED
    assert (tmp_path / "checkpoint_epoch=1.pt").exists()

    def full_disk(obj, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_atomic", full_disk)
    engine, _, _ = _one_epoch_engine(tmp_path)
    with pytest.raises(RuntimeError, match=r"writing a training checkpoint to .* failed .*No space left.*intact"):
        engine.run(range(2), max_epochs=3)  # resumes at epoch 1, trains epoch 2, its write fails
    assert engine.state.epoch == 3  # the failure surfaced at the next save (epoch 3's), before epoch 3's was written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt"]


def test_background_auto_when_a_core_is_free_or_the_network_is_on_a_gpu(tmp_path, monkeypatch):
    _, _, ckpt = _one_epoch_engine(tmp_path, background="auto")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert ckpt._in_background() is False  # every core trains: the writer would only compete with them
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert ckpt._in_background() is True
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with torch.device("meta"):  # a network on another device than the CPU (no GPU needed to tell)
        ckpt.objects["network"] = torch.nn.Linear(2, 1)
    assert ckpt._in_background() is True


def test_min_interval_skips_saves_but_never_the_first_or_last_epoch(tmp_path, monkeypatch):
    from ignite.engine import Engine

    from monai_ext.engines import checkpoint

    clock = iter(float(t) for t in range(0, 1000, 10))  # read once per epoch end: epochs of 10 s
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: next(clock))
    engine = Engine(lambda e, b: None)
    ckpt = ResumableCheckpoint(str(tmp_path), {}, n_saved=10, background=False, min_interval_s=25)
    ckpt.attach(engine)
    saved = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(sorted(p.name for p in tmp_path.iterdir())[-1]))
    engine.run(range(2), max_epochs=7)
    names = sorted({int(n.split("=")[1][:-3]) for n in saved})
    assert names == [1, 4, 7]  # epoch 1 (the first), 4 (30 s after it), 7 (the last, 30 s after 4 too)
    engine.run(range(2), max_epochs=9)  # a resumed (extended) run saves its first epoch again
    assert (tmp_path / "checkpoint_epoch=8.pt").exists() and (tmp_path / "checkpoint_epoch=9.pt").exists()


def test_write_before_returning_when_background_is_off(tmp_path):
    engine, _, ckpt = _one_epoch_engine(tmp_path, background="false")
    assert ckpt.background is False
    engine.state.max_epochs, engine.state.epoch = 1, 1
    ckpt.save(engine)
    assert (tmp_path / "checkpoint_epoch=1.pt").exists()


def test_save_atomic_keeps_previous_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_atomic({"w": torch.ones(2)}, str(path))

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_atomic({"w": torch.zeros(2)}, str(path))
    monkeypatch.undo()
    torch.testing.assert_close(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_best_model_saver_keeps_best_across_restarts(tmp_path):
    net = torch.nn.Linear(2, 1)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[], network=net)
    saver = BestModelSaver(net, str(tmp_path / "model.pt"), "dice")
    for value, expect_saved in ((0.5, True), (0.4, False), (0.7, True)):
        evaluator.state.metrics = {"dice": value}
        with torch.no_grad():
            net.weight.fill_(value)
        saver(evaluator)
        saved = torch.load(tmp_path / "model.pt", weights_only=True)["weight"]
        assert (float(saved.flatten()[0]) == pytest.approx(value)) == expect_saved
    record = json.loads((tmp_path / "model_metrics.json").read_text(encoding="utf-8"))
    assert record["metrics"]["dice"] == pytest.approx(0.7)
    again = BestModelSaver(net, str(tmp_path / "model.pt"), "dice")  # a resumed run knows the best so far
    assert again.best == pytest.approx(0.7)


def test_resume_with_more_epochs_keeps_the_configured_schedule_length(tmp_path):
    """Extending a run (larger max_epochs) must stretch the cosine schedule, not continue the saved one at lr 0."""
    from ignite.engine import Engine
    from monai.optimizers import WarmupCosineSchedule

    def schedule(total: int):
        optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
        return optimizer, WarmupCosineSchedule(optimizer, warmup_steps=1, t_total=total)

    def run(epochs: int) -> list[float]:
        optimizer, scheduler = schedule(epochs * 5)
        lrs = []

        def step(engine, batch):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()

        engine = Engine(step)
        objects = {"optimizer": optimizer, "lr_scheduler": scheduler}
        ResumableCheckpoint(str(tmp_path), objects).attach(engine)
        engine.run(range(5), max_epochs=epochs)
        return lrs

    assert len(run(2)) == 10
    resumed = run(4)  # resumes at epoch 2 and runs epochs 3-4 on the 20-step schedule configured now
    optimizer, fresh = schedule(20)
    expected = []
    for _ in range(20):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        fresh.step()
    assert resumed == pytest.approx(expected[10:]) and min(resumed[:5]) > 0.1
