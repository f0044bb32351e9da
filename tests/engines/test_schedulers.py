"""Tests of monai_ext.engines.schedulers."""

import math
import warnings

import pytest
import torch

from monai_ext.engines.schedulers import LinearWarmupCosineLR


def _optimizer(lr=1e-3, groups=1):
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * (g + 1)} for g in range(groups)]
    return torch.optim.AdamW(params)


def _run(scheduler, optimizer, steps):
    rates = []
    for _ in range(steps):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return rates


def test_values_at_key_steps():
    opt = _optimizer(1e-3)
    sched = LinearWarmupCosineLR(opt, warmup_steps=20, max_steps=100, warmup_start_lr=1e-5, eta_min=1e-6)
    rates = [r[0] for r in _run(sched, opt, 121)]
    assert rates[0] == pytest.approx(1e-5)
    assert rates[10] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 10 / 20)
    assert rates[20] == pytest.approx(1e-3)
    assert rates[60] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)  # half-way through the cosine
    assert rates[40] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert rates[100] == pytest.approx(1e-6)
    assert rates[120] == pytest.approx(1e-6)
    assert all(a <= b for a, b in zip(rates[:20], rates[1:21]))  # rising warm-up
    assert all(a >= b for a, b in zip(rates[20:100], rates[21:101]))  # falling cosine


def test_suprem_defaults_and_groups():
    opt = _optimizer(1e-3, groups=2)
    sched = LinearWarmupCosineLR(opt, warmup_steps=20, max_steps=800)
    rates = _run(sched, opt, 801)
    assert rates[0] == [0.0, 0.0]
    assert rates[20] == pytest.approx([1e-3, 2e-3])  # each group scales with its own base rate
    assert rates[800] == [0.0, 0.0]
    assert sched.get_last_lr() == pytest.approx([0.0, 0.0])


def test_no_warmup():
    opt = _optimizer(0.1)
    sched = LinearWarmupCosineLR(opt, warmup_steps=0, max_steps=10)
    rates = [r[0] for r in _run(sched, opt, 11)]
    assert rates[0] == pytest.approx(0.1) and rates[5] == pytest.approx(0.05) and rates[10] == pytest.approx(0.0)


def test_resume_from_state_dict():
    opt = _optimizer(1e-2)
    sched = LinearWarmupCosineLR(opt, warmup_steps=5, max_steps=30, warmup_start_lr=1e-4)
    full = _run(sched, opt, 30)

    opt_a = _optimizer(1e-2)
    sched_a = LinearWarmupCosineLR(opt_a, warmup_steps=5, max_steps=30, warmup_start_lr=1e-4)
    _run(sched_a, opt_a, 12)
    state = sched_a.state_dict()
    assert state["last_epoch"] == 12 and state["warmup_steps"] == 5 and "optimizer" not in state

    opt_b = _optimizer(1e-2)
    opt_b.load_state_dict(opt_a.state_dict())
    sched_b = LinearWarmupCosineLR(opt_b, warmup_steps=1, max_steps=2)  # values come from the state dict
    sched_b.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "step before optimizer.step" or get_lr warnings
        resumed = _run(sched_b, opt_b, 18)
    assert [r[0] for r in resumed] == pytest.approx([r[0] for r in full[12:]])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="max_steps"):
        LinearWarmupCosineLR(_optimizer(), warmup_steps=10, max_steps=10)
    with pytest.raises(ValueError, match="warmup_steps"):
        LinearWarmupCosineLR(_optimizer(), warmup_steps=-1, max_steps=10)
