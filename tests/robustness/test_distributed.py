"""Distributed training is the single-process training of the whole batch, spread over processes.

Two gloo processes on CPU, each given half of a fixed batch, train a bundle's own network (built from the bundle's
``configs/train.json`` through ``ConfigParser``, wrapped in ``DistributedDataParallel`` as its
``multi_gpu_train.json`` does) with SGD for three steps; one process trains the same network on the whole batch.
DDP averages the ranks' gradients, so with a loss that is a mean over samples and equal halves the gradient of
each step is the full batch's, provided the network treats the samples of a batch independently:

* SegResNet (``abdomenatlas_supervised_pretraining``) normalises with GroupNorm, per sample: the reference is
  plain full-batch training.
* The Med3D ResNets (``transfer_segmentation``, ``med3d_3dseg8_cotraining``) use BatchNorm, whose training-mode
  statistics mix the samples of a batch. ``multi_gpu_train.json`` converts it to SyncBatchNorm only on GPU, because
  SyncBatchNorm refuses CPU tensors (torch 2.13 raises "SyncBatchNorm expected input tensor to be on GPU", checked
  below), so on CPU each rank normalises with the statistics of its own half. The exact single-process equivalent is
  then the whole batch processed as its two halves ("ghost batches": one forward per half, the mean of the two
  losses, one step), which is what is compared; the distance to plain full-batch training (BatchNorm over all four
  samples) is reported as well, to show what the half-batch statistics change.

Only parameters are compared: DDP broadcasts rank 0's buffers (BatchNorm running statistics) before every forward,
so those follow rank 0's half alone, and training-mode BatchNorm does not read them.

Validation under DDP: every bundle's ``multi_gpu_train.json`` gives each rank its own share of the validation set
(MONAI's ``DistributedSampler``, no shuffling, no padding) and uses only metrics that combine the ranks' shares. The
per-volume metric of the segmentation bundles (``PerDomainMeanDice``) is checked in the same two processes: each
rank scores its share and every rank reports the figures of the whole set; and end to end, a bundle trained under
torchrun keeps the figure that a single-process evaluation of its weights gives on the whole validation set.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.data import DistributedSampler

from monai_ext.engines.metrics import PerDomainMeanDice
from tests.bundles.test_bundles import (
    BUNDLES,
    ROOT,
    _bundle_args,
    _bundle_copy,
    _bundle_run,
    _free_port,
    _ids,
    _run,
    _smoke,
)

WORLD = 2
STEPS = 3
LR = 0.05
BATCH = 4  # two samples per rank
SHAPE = (16, 16, 16)

#: bundle -> (overrides of its train.json, whether the network normalises per sample, find_unused_parameters as in
#: its multi_gpu_train.json for the default settings)
BUNDLE_NETWORKS = {
    "transfer_segmentation": ({}, False, False),
    "med3d_3dseg8_cotraining": ({}, False, True),
    "abdomenatlas_supervised_pretraining": ({}, True, False),
}


def _bundle_network(name: str, overrides: dict) -> torch.nn.Module:
    bundle = ROOT / "bundles" / name
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({"bundle_root": str(bundle), **_smoke(bundle), **overrides})
    torch.manual_seed(0)
    return parser.get_parsed_content("network_def")


def _logits(network: torch.nn.Module, x: torch.Tensor, domain: torch.Tensor | None) -> torch.Tensor:
    return network(x) if domain is None else network(x, domain)


def _sgd_steps(network: torch.nn.Module, batches: list[tuple]) -> None:
    """``STEPS`` SGD steps; each step's loss is the mean of the cross-entropies of ``batches`` (one forward each)."""
    optimizer = torch.optim.SGD(network.parameters(), lr=LR, momentum=0.9)
    network.train()
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = sum(F.cross_entropy(_logits(network, x, d), y) for x, y, d in batches) / len(batches)
        loss.backward()
        optimizer.step()


def _half(case: dict, rank: int) -> tuple:
    n = BATCH // WORLD
    part = slice(rank * n, (rank + 1) * n)
    return case["x"][part], case["y"][part], None if case["domain"] is None else case["domain"][part]


def _parameters(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.named_parameters()}


def _metric_rows(rank: int | None) -> list[tuple]:
    """Five validation volumes of two domains; a ``rank`` gets its share as the sampler of multi_gpu_train.json
    gives it (three and two volumes)."""
    g = torch.Generator().manual_seed(7)
    rows = []
    for i in range(5):
        domain = int(i in (1, 2))
        label = torch.randint(0, 3 if domain else 2, (1, 6, 6, 6), generator=g)
        pred = torch.where(torch.rand(label.shape, generator=g) < 0.7, label, torch.zeros_like(label))
        rows.append((pred, label, domain, f"case{i}.nii.gz"))
    if rank is None:
        return rows
    sampler = DistributedSampler(rows, even_divisible=False, num_replicas=WORLD, rank=rank, shuffle=False)
    return [rows[i] for i in sampler]


def _metric(rows: list[tuple]) -> tuple[dict, list[dict]]:
    def step(engine, row):
        pred, label, domain, name = row
        label = label.clone()
        label.meta = {"filename_or_obj": name}  # as a MetaTensor carries it
        engine.state.batch = [{"domain": domain}]
        return [{"pred": pred, "label": label}]

    engine = Engine(step)
    metric = PerDomainMeanDice(["a", "b"], [2, 3])
    metric.attach(engine, "val_mean_dice")
    engine.run(rows, max_epochs=1)
    return dict(engine.state.metrics), metric.cases


def _worker(rank: int, port: int, cases: dict, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        results: dict = {"networks": {}}
        for name, case in cases.items():
            network = copy.deepcopy(case["network"])
            ddp = torch.nn.parallel.DistributedDataParallel(network, find_unused_parameters=case["find_unused"])
            _sgd_steps(ddp, [_half(case, rank)])
            results["networks"][name] = _parameters(network)
        try:  # what multi_gpu_train.json would run on CPU if it converted BatchNorm there too
            torch.nn.SyncBatchNorm(2).train()(torch.randn(2, 2, 4))
            results["sync_batchnorm_on_cpu"] = "works"
        except ValueError as e:
            results["sync_batchnorm_on_cpu"] = str(e)
        results["metric"] = _metric(_metric_rows(rank))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Initial networks, the single-process references and the two ranks' results (one spawn for all cases)."""
    cases, references = {}, {}
    for name, (overrides, per_sample, find_unused) in BUNDLE_NETWORKS.items():
        network = _bundle_network(name, overrides)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(BATCH, 1, *SHAPE, generator=g)
        counts = getattr(network, "class_counts", None)  # MultiDomainSegmenter: one branch per dataset
        domain = None if counts is None else torch.tensor([0, 1, 0, 1])  # two branches on each rank
        with torch.no_grad():
            out = _logits(network.eval(), x, domain)
        n_classes = out.shape[1] if counts is None else min(counts[:2])  # labels valid in both branches
        y = torch.randint(0, n_classes, (BATCH, *out.shape[2:]), generator=g)
        case = {"network": network, "x": x, "y": y, "domain": domain, "find_unused": find_unused}
        cases[name] = case

        full = copy.deepcopy(network)
        _sgd_steps(full, [(x, y, domain)])
        ghost = copy.deepcopy(network)
        _sgd_steps(ghost, [_half(case, r) for r in range(WORLD)])
        references[name] = {
            "initial": _parameters(network),
            "full": _parameters(full),
            "ghost": _parameters(ghost),
            "per_sample": per_sample,
        }
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), cases, str(out_dir)), nprocs=WORLD, join=True)
    ranks = [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return {"references": references, "ranks": ranks}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("name", sorted(BUNDLE_NETWORKS))
def test_two_ranks_on_half_batches_reach_the_single_process_weights(runs, name):
    ref = runs["references"][name]
    rank0, rank1 = (r["networks"][name] for r in runs["ranks"])
    assert _max_abs_diff(rank0, rank1) == 0.0, "DDP replicas diverged"
    moved = _max_abs_diff(ref["initial"], ref["full"])
    to_full = _max_abs_diff(rank0, ref["full"])
    to_ghost = _max_abs_diff(rank0, ref["ghost"])
    report = (
        f"{name}: largest parameter change in {STEPS} steps {moved:.3e}; DDP vs one process on the full batch "
        f"{to_full:.3e}; DDP vs one process on the two halves {to_ghost:.3e}"
    )
    print(report)
    assert moved > 1e-3, report  # the steps did move the weights, so agreement means something
    # float32 sums in another order (gradient all-reduce, convolutions over 2 instead of 4 samples): ~1e-7 relative
    reference = ref["full"] if ref["per_sample"] else ref["ghost"]
    for k, v in rank0.items():
        torch.testing.assert_close(v, reference[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}\n{report}")
    if ref["per_sample"]:  # the network really treats samples independently: halves or whole batch, same steps
        for k, v in ref["ghost"].items():
            torch.testing.assert_close(v, ref["full"][k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.distributed
def test_sync_batchnorm_is_unavailable_on_cpu_so_cpu_ddp_keeps_batchnorm(runs):
    """The reason multi_gpu_train.json converts BatchNorm to SyncBatchNorm only on GPU. Should a torch release accept
    CPU tensors, this fails: convert on CPU too then (and compare with ``full`` above instead of ``ghost``)."""
    for rank in runs["ranks"]:
        assert "expected input tensor to be on GPU" in rank["sync_batchnorm_on_cpu"]
    for name in ("transfer_segmentation", "med3d_3dseg8_cotraining"):
        config = (ROOT / "bundles" / name / "configs" / "multi_gpu_train.json").read_text(encoding="utf-8")
        assert "convert_sync_batchnorm" in config and "torch.cuda.is_available()" in config


@pytest.mark.slow
@pytest.mark.distributed
def test_per_domain_dice_gathers_the_volumes_of_all_ranks(runs):
    metrics, cases = _metric(_metric_rows(None))
    for rank in runs["ranks"]:
        rank_metrics, rank_cases = rank["metric"]
        assert rank_metrics.keys() == metrics.keys()
        for key, value in metrics.items():
            assert rank_metrics[key] == pytest.approx(value, nan_ok=True), key
        assert [c["case"] for c in rank_cases] == [c["case"] for c in cases]  # the single-process order
        assert rank_cases == cases or all(
            a.keys() == b.keys() and all(a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k])) for k in a)
            for a, b in zip(rank_cases, cases)
        )
    assert len(cases) == 5 and not math.isnan(metrics["val_mean_dice"])
    assert [len(rank["metric"][1]) for rank in runs["ranks"]] == [5, 5]


#: validation metrics that combine the ranks' shares: MONAI's metric handlers (all_gather of their buffers), ignite's
#: metrics (all_reduce of their sums) and this package's PerDomainMeanDice (all_gather of its per-volume rows)
REDUCING_METRICS = ("monai.handlers.", "ignite.metrics.", "monai_ext.engines.metrics.PerDomainMeanDice")


@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids)
def test_multi_gpu_config_shards_validation_and_combines_the_metrics(bundle: Path):
    """Under DDP each rank validates its own share, not the whole set again; the figures are then of the whole set."""
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in ("train.json", "multi_gpu_train.json")])
    assert parser.get("validate#dataloader#sampler") == "@validate#sampler"
    sampler = parser.get("validate#sampler")
    # MONAI's, without padding: torch's DistributedSampler repeats volumes to even the shares, which would count twice
    assert sampler["_target_"] == "monai.data.DistributedSampler" and sampler["dataset"] == "@validate#dataset"
    assert sampler["shuffle"] is False and sampler["even_divisible"] is False
    metrics = {**parser.get("validate#key_metric"), **(parser.get("validate#additional_metrics") or {})}
    assert metrics and all(m["_target_"].startswith(REDUCING_METRICS) for m in metrics.values()), metrics


@pytest.mark.slow
@pytest.mark.distributed
def test_bundle_under_torchrun_validates_the_whole_set_once(tmp_path: Path):
    """``transfer_segmentation`` trained by two ranks (its multi_gpu_train.json) on three validation volumes, two on
    rank 0 and one on rank 1: the figure it keeps with the best model is the single-process evaluation's of the
    same weights on all three volumes."""
    bundle = ROOT / "bundles" / "transfer_segmentation"
    folder = _bundle_copy(bundle, tmp_path)
    settings = {**_smoke(bundle), "max_val_cases": 3, "val_at_start": False}
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_port", str(_free_port())]
    _run(torchrun + _bundle_args(folder, ["train.json", "multi_gpu_train.json"], settings, tmp_path, "ddp"), tmp_path)
    kept = json.loads((folder / "models" / "model_metrics.json").read_text(encoding="utf-8"))["metrics"]["val_mean_dice"]
    with open(folder / "eval" / "val_history.csv", newline="", encoding="utf-8") as f:
        history = list(csv.DictReader(f))
    assert len(history) == 1 and float(history[0]["val_mean_dice"]) == kept  # one row: rank 0 alone writes

    _bundle_run(folder, ["train.json", "evaluate.json"], settings, tmp_path, "evaluate")  # one process, all volumes
    with open(folder / "eval" / "model_metrics.csv", newline="", encoding="utf-8") as f:
        evaluated = {row["metric"]: float(row["value"]) for row in csv.DictReader(f)}
    with open(folder / "eval" / "model_per_case_dice.csv", newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert kept == pytest.approx(evaluated["val_mean_dice"], abs=1e-6)  # the table keeps six decimals


def test_logging_handlers_run_on_rank_zero_only(monkeypatch, tmp_path):
    """multi_gpu_train.json keeps the loss log and TensorBoard on rank 0; checkpoints and metrics stay on every rank."""
    from monai.handlers import LrScheduleHandler, StatsHandler, TensorBoardStatsHandler

    from monai_ext.engines import checkpoint as ckpt
    from monai_ext.engines.distributed import main_process_logging

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    lr = LrScheduleHandler(torch.optim.lr_scheduler.StepLR(optimizer, 1))
    saver = ckpt.ResumableCheckpoint(str(tmp_path), {})
    handlers = [lr, StatsHandler(), TensorBoardStatsHandler(log_dir=str(tmp_path)), saver]
    monkeypatch.setattr("monai_ext.engines.distributed.is_main_process", lambda: True)
    assert main_process_logging(handlers) == handlers
    monkeypatch.setattr("monai_ext.engines.distributed.is_main_process", lambda: False)
    assert main_process_logging(handlers) == [lr, saver]
    assert main_process_logging(None) == []
