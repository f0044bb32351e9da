"""Benchmarks that measure what pre-training buys: the transfer benchmark (scratch against each pre-trained start)."""

from .transfer import (
    BenchmarkArm,
    parse_arm,
    parse_setting,
    plan_runs,
    run_transfer_benchmark,
    summarise,
    write_outputs,
)

__all__ = [
    "BenchmarkArm",
    "parse_arm",
    "parse_setting",
    "plan_runs",
    "run_transfer_benchmark",
    "summarise",
    "write_outputs",
]
