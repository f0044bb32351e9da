"""The transfer benchmark: what a pre-trained start buys on one target task, measured against training from scratch.

Claims to check (REFERENCE.md sections 1, 2, 4): Med3D converges 2-10x faster and gains 3-20 points (Chen et al.,
arXiv:1904.00625); SuPreM's few-shot gains (Li et al., ICLR 2024); VDT needs up to 60% fewer annotations for the same
result (Zhang et al., arXiv:2201.01426). For every arm (a source, or scratch), label fraction and seed, the benchmark
runs a fine-tuning bundle (``python -m monai.bundle run``, exactly as a user does) with the same iteration budget,
validation schedule and validation split, reads the validation history each run writes, and reports:

- the final score (at the budget) with its spread over seeds;
- the speed-up: iterations scratch needed to reach its best score, divided by the iterations the arm needed to reach
  that score (mean curves over seeds, same label fraction);
- label efficiency: the smallest label fraction at which the arm matches scratch trained on all labels.

Outputs in ``output_dir``: ``runs.csv`` (every validation of every run), ``summary.csv``, ``summary.md`` (tables,
command, machine, minutes), ``curves.png`` (score against iterations) and ``fractions.png`` (final score against label
fraction). Runs are resumable: a finished run is not repeated, an interrupted one continues from its checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.engines.finetune import read_validation_history
from monai_ext.weights.sources import NO_SOURCE

__all__ = [
    "BenchmarkArm",
    "parse_arm",
    "parse_setting",
    "plan_runs",
    "run_transfer_benchmark",
    "summarise",
    "write_outputs",
]


@dataclass(frozen=True)
class BenchmarkArm:
    """One start to compare.

    Attributes:
        label: the name in tables and plots.
        source: a name of :data:`monai_ext.weights.sources.PRETRAINED_SOURCES`, or ``"scratch"``.
        pretrained_path: the checkpoint file or folder (``None``: the source's default places).
        architecture: the architecture (needed for scratch; checked for the others).
    """

    label: str
    source: str
    pretrained_path: str | None = None
    architecture: str | None = None

    @property
    def is_scratch(self) -> bool:
        return self.source == NO_SOURCE


def parse_arm(text: str) -> BenchmarkArm:
    """Parse ``[label=]source[:path][@architecture]``, e.g. ``scratch@med3d-resnet10``,
    ``med3d=medicalnet-resnet10:/weights/resnet_10.pth`` or ``vdt=bundle:bundles/vdt_natural_image_pretraining``.
    """
    label, _, rest = text.rpartition("=")
    rest, _, architecture = rest.partition("@")
    source, _, path = rest.partition(":")
    if not source:
        raise ValueError(f"arm {text!r}: expected [label=]source[:path][@architecture].")
    return BenchmarkArm(label or source, source, path or None, architecture or None)


def parse_setting(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` (``value`` read as JSON when it is JSON, else kept as a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"setting {text!r}: expected key=value.")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _fraction_tag(fraction: float) -> str:
    return f"f{round(100 * fraction):03d}"


def plan_runs(arms: Sequence[BenchmarkArm], fractions: Sequence[float], seeds: Sequence[int]) -> list[dict]:
    """Every (arm, fraction, seed) run, in the order they run (all arms of a fraction and seed together)."""
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise ValueError(f"arm labels must be unique, got {labels}.")
    if not any(a.is_scratch for a in arms):
        raise ValueError("the benchmark compares against training from scratch: add the arm 'scratch'.")
    return [
        {"arm": arm, "fraction": float(f), "seed": int(s)}
        for f in sorted(fractions, reverse=True)
        for s in seeds
        for arm in arms
    ]


def _architecture_for_scratch(arms: Sequence[BenchmarkArm], default: str | None) -> str | None:
    from monai_ext.weights.sources import source_architecture

    for arm in arms:
        if not arm.is_scratch:
            return arm.architecture or source_architecture(arm.source, arm.pretrained_path)[0]
    return default


def _run_one(
    run: dict,
    bundle_dir: Path,
    run_dir: Path,
    settings: dict,
    metric: str,
    iterations: int,
) -> tuple[list[dict], float, bool]:
    """Run (or resume) one fine-tuning; returns its validation history, wall seconds and whether it ran now."""
    history_file = run_dir / "eval" / "val_history.csv"
    if history_file.is_file():
        rows = read_validation_history(history_file)
        if rows and rows[-1]["iteration"] >= iterations:
            return rows, 0.0, False
    run_dir.mkdir(parents=True, exist_ok=True)
    args_file = run_dir / "settings.json"
    args_file.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    configs = bundle_dir / "configs"
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(configs / "train.json"),
        "--meta_file", str(configs / "metadata.json"),
        "--logging_file", str(configs / "logging.conf"),
        "--args_file", str(args_file),
    ]  # fmt: skip
    start = time.time()
    with open(run_dir / "log.txt", "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir, check=False)
    seconds = time.time() - start
    if proc.returncode != 0:
        tail = (run_dir / "log.txt").read_text(encoding="utf-8")[-3000:]
        raise RuntimeError(
            f"run {run['arm'].label} fraction {run['fraction']} seed {run['seed']} failed (exit {proc.returncode}); "
            f"its log is {run_dir / 'log.txt'}; rerun the benchmark to resume it. Last lines:\n{tail}"
        )
    if not history_file.is_file():
        raise RuntimeError(f"{run_dir}: the bundle wrote no eval/val_history.csv; is its metric {metric!r}?")
    return read_validation_history(history_file), seconds, True


def run_transfer_benchmark(
    bundle_dir: str | os.PathLike,
    arms: Sequence[BenchmarkArm],
    output_dir: str | os.PathLike,
    fractions: Sequence[float] = (1.0,),
    seeds: Sequence[int] = (0,),
    iterations: int = 100,
    val_every: int = 20,
    iterations_per_epoch: int | None = None,
    settings: Mapping[str, Any] | None = None,
    metric: str | None = None,
    log=print,
    command: str | None = None,
) -> dict:
    """Run every arm at every label fraction and seed with the same budget, then summarise and write the outputs.

    Args:
        bundle_dir: a fine-tuning bundle (``bundles/transfer_segmentation`` or ``bundles/transfer_classification``).
        arms: the starts to compare; one must be scratch (its architecture defaults to that of the first other arm).
        output_dir: where runs and results go.
        fractions: label fractions of the training split.
        seeds: seeds (network initialisation, sampling and the label subset).
        iterations: training iterations of every run.
        val_every: iterations between validations (also validated before the first iteration).
        iterations_per_epoch: epoch length (default ``val_every``); ``iterations`` and ``val_every`` must be multiples.
        settings: other bundle settings for every run (``dataset_dir``, ``patch_size``, ``batch_size``, ...).
        metric: the validation metric (default: the first of the bundle's ``eval_metrics``).
        log: progress printer.
        command: the command line to record in the summary (default: this process's arguments).

    Returns:
        The summary (see :func:`summarise`), also written to ``output_dir``.
    """
    bundle_dir = Path(bundle_dir).resolve()
    output_dir = Path(output_dir).resolve()
    meta = json.loads((bundle_dir / "configs" / "metadata.json").read_text(encoding="utf-8"))
    metric = metric or next(iter(meta.get("eval_metrics", {"val_mean_dice": 0})))
    ipe = int(iterations_per_epoch or val_every)
    if iterations % ipe or val_every % ipe:
        raise ValueError(f"iterations ({iterations}) and val_every ({val_every}) must be multiples of {ipe}.")
    scratch_architecture = _architecture_for_scratch(arms, (settings or {}).get("architecture"))
    runs = plan_runs(arms, fractions, seeds)
    log(f"[benchmark] {len(runs)} runs: {len(arms)} arms x {len(fractions)} label fractions x {len(seeds)} seeds, "
        f"{iterations} iterations each, validation every {val_every}; metric {metric}; output {output_dir}")  # fmt: skip
    histories: dict[tuple[str, float, int], list[dict]] = {}
    spent, done_now = 0.0, 0
    started = time.time()
    for i, run in enumerate(runs, 1):
        arm = run["arm"]
        run_dir = output_dir / "runs" / arm.label / f"{_fraction_tag(run['fraction'])}_s{run['seed']}"
        run_settings = {
            **dict(settings or {}),
            "bundle_root": str(run_dir),
            "source": arm.source,
            "pretrained_path": arm.pretrained_path,
            "architecture": arm.architecture or (scratch_architecture if arm.is_scratch else None),
            "label_fraction": run["fraction"],
            "seed": run["seed"],
            "iterations_per_epoch": ipe,
            "max_epochs": iterations // ipe,
            "val_interval": val_every // ipe,
            "val_at_start": True,
        }
        log(f"[benchmark] {i}/{len(runs)} {arm.label} fraction {run['fraction']:.0%} seed {run['seed']} ...")
        rows, seconds, ran = _run_one(run, bundle_dir, run_dir, run_settings, metric, iterations)
        histories[(arm.label, run["fraction"], run["seed"])] = rows
        spent += seconds
        done_now += int(ran)
        left = len(runs) - i
        eta = f", about {spent / done_now * left / 60:.1f} min left" if done_now and left else ""
        scores = [r.get(metric, float("nan")) for r in rows]
        status = f"{seconds:.0f} s" if ran else "done earlier"
        log(f"[benchmark]   {status}: {metric} {scores[0]:.4f} at start -> {scores[-1]:.4f} at {int(rows[-1]['iteration'])} "
            f"(best {np.nanmax(scores):.4f}){eta}")  # fmt: skip
    summary = summarise(histories, arms, metric, iterations)
    summary["minutes"] = (time.time() - started) / 60
    summary["command"] = command or shlex.join(sys.argv)
    summary["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    summary["bundle"] = str(bundle_dir)
    summary["settings"] = dict(settings or {})
    write_outputs(summary, histories, output_dir)
    log(f"[benchmark] finished in {summary['minutes']:.1f} min; results: {output_dir / 'summary.md'}")
    return summary


def _mean_curve(runs: list[list[dict]], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterations, mean and std over seeds of a metric (on the iterations every run validated)."""
    common = sorted(set.intersection(*[{int(r["iteration"]) for r in rows} for rows in runs]))
    values = np.array([[{int(r["iteration"]): r.get(metric, np.nan) for r in rows}[it] for it in common] for rows in runs])
    return np.array(common), values.mean(0), values.std(0)


def summarise(
    histories: Mapping[tuple[str, float, int], list[dict]], arms: Sequence[BenchmarkArm], metric: str, iterations: int
) -> dict:
    """Final scores, speed-ups and label efficiency from the validation histories.

    Args:
        histories: ``(arm label, fraction, seed) -> rows`` of :func:`monai_ext.engines.finetune.read_validation_history`.
        arms: the arms (one is scratch).
        metric: the metric column.
        iterations: the budget (the final score is the last validation at or before it).

    Returns:
        ``{"metric", "iterations", "rows": [per arm and fraction], "arms": [per arm], "curves": {...}}``.
    """
    scratch = next(a for a in arms if a.is_scratch).label
    fractions = sorted({f for _, f, _ in histories})
    rows, curves = [], {}
    for arm in arms:
        for fraction in fractions:
            runs = [h for (label, f, _), h in sorted(histories.items()) if label == arm.label and f == fraction]
            if not runs:
                continue
            finals = [[r for r in rows_ if r["iteration"] <= iterations][-1].get(metric, np.nan) for rows_ in runs]
            its, mean, std = _mean_curve(runs, metric)
            curves[(arm.label, fraction)] = (its, mean, std)
            rows.append({
                "arm": arm.label, "source": arm.source, "fraction": fraction, "seeds": len(runs),
                "final_mean": float(np.mean(finals)), "final_std": float(np.std(finals)),
                "best_mean": float(np.nanmax(mean)), "start_mean": float(mean[0]),
            })  # fmt: skip
    for row in rows:
        its_s, mean_s, _ = curves[(scratch, row["fraction"])]
        target = float(np.nanmax(mean_s))
        scratch_at = int(its_s[int(np.nanargmax(mean_s))])
        its, mean, _ = curves[(row["arm"], row["fraction"])]
        reached = [int(it) for it, m in zip(its, mean) if m >= target]
        row["scratch_best"] = target
        row["iterations_to_scratch_best"] = reached[0] if reached else None
        row["speedup"] = (scratch_at / reached[0]) if reached and reached[0] > 0 else (math.inf if reached else None)
    arm_rows = []
    full = max(fractions)
    scratch_full = next(r["final_mean"] for r in rows if r["arm"] == scratch and r["fraction"] == full)
    for arm in arms:
        mine = sorted((r for r in rows if r["arm"] == arm.label), key=lambda r: r["fraction"])
        matching = [r["fraction"] for r in mine if r["final_mean"] >= scratch_full]
        at_full = next((r for r in mine if r["fraction"] == full), None)
        arm_rows.append({
            "arm": arm.label, "source": arm.source, "pretrained_path": arm.pretrained_path,
            "final_at_full": at_full["final_mean"] if at_full else None,
            "gain_at_full": (at_full["final_mean"] - scratch_full) if at_full else None,
            "smallest_fraction_matching_scratch_full": matching[0] if matching else None,
            "speedup_at_full": at_full["speedup"] if at_full else None,
        })  # fmt: skip
    return {"metric": metric, "iterations": iterations, "scratch": scratch, "fractions": fractions, "rows": rows,
            "arms": arm_rows, "curves": curves}  # fmt: skip


def _fmt(value, pattern="{:.4f}", none="-") -> str:
    if value is None:
        return none
    if isinstance(value, float) and math.isinf(value):
        return "from the start"
    return pattern.format(value)


def _markdown(summary: dict) -> str:
    m = summary["metric"]
    lines = [
        f"# Transfer benchmark: {m} after {summary['iterations']} iterations",
        "",
        f"Bundle `{summary.get('bundle', '')}`; settings `{json.dumps(summary.get('settings', {}))}`.",
        f"Machine: {summary.get('machine', '')}; {summary.get('minutes', 0):.1f} min in total.",
        "",
        f"Command: `{summary.get('command', '')}`",
        "",
        "## Per source",
        "",
        f"| arm | source | final {m} (all labels) | gain over scratch | speed-up to scratch's best | smallest label "
        "fraction matching scratch at 100% |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["arms"]:
        frac = r["smallest_fraction_matching_scratch_full"]
        lines.append(
            f"| {r['arm']} | {r['source']} | {_fmt(r['final_at_full'])} | {_fmt(r['gain_at_full'], '{:+.4f}')} | "
            f"{_fmt(r['speedup_at_full'], '{:.1f}x', 'not reached')} | {_fmt(frac, '{:.0%}', 'none')} |"
        )
    lines += [
        "",
        "## Per label fraction (mean ± std over seeds)",
        "",
        f"| arm | label fraction | seeds | {m} at start | final {m} | best of mean curve | iterations to scratch's best |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(summary["rows"], key=lambda r: (-r["fraction"], r["arm"])):
        lines.append(
            f"| {r['arm']} | {r['fraction']:.0%} | {r['seeds']} | {r['start_mean']:.4f} | "
            f"{r['final_mean']:.4f} ± {r['final_std']:.4f} | {r['best_mean']:.4f} | "
            f"{_fmt(r['iterations_to_scratch_best'], '{}', 'not reached')} |"
        )
    lines += ["", "![validation curves](curves.png)", "", "![final score against label fraction](fractions.png)", ""]
    return "\n".join(lines)


def _plots(summary: dict, output_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, curves, fractions = summary["metric"], summary["curves"], summary["fractions"]
    arms = [r["arm"] for r in summary["arms"]]
    fig, axes = plt.subplots(1, len(fractions), figsize=(4.5 * len(fractions), 3.6), squeeze=False, sharey=True)
    for ax, fraction in zip(axes[0], sorted(fractions, reverse=True)):
        for arm in arms:
            if (arm, fraction) not in curves:
                continue
            its, mean, std = curves[(arm, fraction)]
            ax.plot(its, mean, marker="o", ms=3, label=arm)
            ax.fill_between(its, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{fraction:.0%} of the labels")
        ax.set_xlabel("training iterations")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"validation {m}")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(output_dir / "curves.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for arm in arms:
        rows = sorted((r for r in summary["rows"] if r["arm"] == arm), key=lambda r: r["fraction"])
        ax.errorbar([100 * r["fraction"] for r in rows], [r["final_mean"] for r in rows],
                    yerr=[r["final_std"] for r in rows], marker="o", capsize=3, label=arm)  # fmt: skip
    ax.set_xlabel("label fraction (%)")
    ax.set_ylabel(f"final validation {m}")
    ax.set_title(f"after {summary['iterations']} iterations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output_dir / "fractions.png", dpi=120)
    plt.close(fig)


def write_outputs(summary: dict, histories: Mapping[tuple[str, float, int], list[dict]], output_dir: str | os.PathLike):
    """Write ``runs.csv``, ``summary.csv``, ``summary.md``, ``summary.json``, ``curves.png`` and ``fractions.png``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metric = summary["metric"]
    with open(output_dir / "runs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "fraction", "seed", "iteration", metric])
        for (arm, fraction, seed), rows in sorted(histories.items()):
            for r in rows:
                writer.writerow([arm, fraction, seed, int(r["iteration"]), r.get(metric, "")])
    with open(output_dir / "summary.csv", "w", newline="", encoding="utf-8") as f:
        fields = list(summary["rows"][0])
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(summary["rows"])
    plain = {k: v for k, v in summary.items() if k != "curves"}
    (output_dir / "summary.json").write_text(json.dumps(plain, indent=2, default=str), encoding="utf-8")
    (output_dir / "summary.md").write_text(_markdown(summary), encoding="utf-8")
    _plots(summary, output_dir)
