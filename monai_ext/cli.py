"""The ``monai-ext`` command: built-in data, datalists, checkpoint inspection and bundle checks.

Bundles themselves run with MONAI's own CLI (``python -m monai.bundle run ...``); this command covers what MONAI's
CLI does not.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys

__all__ = ["main"]


def _data(args: argparse.Namespace) -> int:
    from monai_ext.data.builtin import builtin_dataset_dir, list_builtin_datasets

    available = list_builtin_datasets()
    if args.action == "list":
        for name, description in available.items():
            print(f"{name:28s} {description}")
        return 0
    for name in args.names or list(available):
        print(f"{name}: {builtin_dataset_dir(name, cache_dir=args.cache_dir)}")
    return 0


def _datalist(args: argparse.Namespace) -> int:
    from monai_ext.data.datalists import DatalistError, build_datalist, write_datalist

    datalist, report = build_datalist(args.path, layout=args.layout, deep=args.deep)
    if not report.ok:  # a datalist with broken entries is not written: it would only fail later, inside training
        written = f"{args.output} not written; " if args.output else ""
        raise DatalistError(
            f"{report.summary()}\n{written}fix the files named above, or write only the usable entries with "
            f"`monai-ext onboard {args.path} -o {args.output or 'datalist.json'}`."
        )
    print(report.summary())
    if args.output:
        write_datalist(datalist, args.output)
        print(f"wrote {len(datalist)} items to {args.output}")
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    from monai_ext.weights.medicalnet import medicalnet_checkpoint_info

    print(json.dumps(medicalnet_checkpoint_info(args.path), indent=2, default=str))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from monai_ext.bundle import verify_bundle_metadata

    meta = verify_bundle_metadata(args.bundle)
    print(f"{args.bundle}: metadata valid, version {meta['version']}")
    return 0


def _release(args: argparse.Namespace) -> int:
    from monai_ext.bundle.release import push_release_to_hf_hub, release_bundle

    release = release_bundle(
        args.bundle,
        args.output,
        version=args.version,
        notes=args.notes,
        eval_metrics=args.eval_metrics,
        torchscript=not args.no_torchscript,
        key_in_ckpt=args.key_in_ckpt,
        include=args.include,
        url_base=args.url_base,
        overwrite=args.overwrite,
    )
    print(release.summary())
    if args.push_to_hf_hub:
        result = push_release_to_hf_hub(release.bundle_dir, args.push_to_hf_hub, dry_run=args.dry_run)
        if args.dry_run:
            print(f"dry run: would upload {len(result)} files to {args.push_to_hf_hub}:")
            print("\n".join(f"  {f}" for f in result))
        else:
            print(f"pushed to {args.push_to_hf_hub}: {result}")
    return 0


def _onboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from monai_ext.data.onboarding import onboard_dataset

    onboarding = onboard_dataset(args.path, layout=args.layout, max_cases=args.max_cases)
    report = args.report or str(Path(args.output).with_name(Path(args.output).stem + "_report.md"))
    onboarding.write(args.output, report)
    print(onboarding.summary())
    print(f"wrote {len(onboarding.datalist)} entries to {args.output} and the report to {report}")
    return 0


def _sources(args: argparse.Namespace) -> int:
    from monai_ext.weights.sources import list_sources

    for src in list_sources(args.family):
        where = src.url or (src.default_path or "a path you give (pretrained_path)")
        print(f"{src.name:34s} {str(src.architecture or 'from the file'):28s} {src.licence}")
        if args.verbose:
            print(f"    {src.description}\n    file: {src.filename}  from: {where}\n    format: {src.key_format}\n"
                  f"    first conv: {src.first_conv or '-'}  dropped heads: {', '.join(src.head_keys) or '-'}"
                  f"  sha256: {src.sha256 or 'not published'}\n    {src.citation}")  # fmt: skip
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from monai_ext.benchmark.transfer import parse_arm, parse_setting, run_transfer_benchmark

    run_transfer_benchmark(
        args.bundle,
        [parse_arm(a) for a in args.arm],
        args.output,
        fractions=args.fractions,
        seeds=args.seeds,
        iterations=args.iterations,
        val_every=args.val_every,
        iterations_per_epoch=args.iterations_per_epoch,
        settings=dict(parse_setting(s) for s in args.set),
        metric=args.metric,
        command="monai-ext " + shlex.join(sys.argv[1:]),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monai-ext", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="list or generate the built-in datasets")
    p.add_argument("action", choices=["list", "generate"])
    p.add_argument("names", nargs="*", help="datasets to generate (default: all)")
    p.add_argument("--cache-dir", default=None, help="where to write them (default: $MONAI_EXT_DATA_CACHE)")
    p.set_defaults(func=_data)

    p = sub.add_parser("datalist", help="scan a dataset folder, write a datalist JSON and print a report")
    p.add_argument("path", help="dataset folder (Decathlon, nnU-Net raw, AbdomenAtlas, image folders) or CSV")
    p.add_argument("--layout", default="auto")
    p.add_argument("--output", "-o", default=None, help="datalist JSON to write (only when no error is found)")
    p.add_argument("--deep", action="store_true", help="also read every voxel: NaN/inf images, undeclared label values")
    p.set_defaults(func=_datalist)

    p = sub.add_parser("checkpoint-info", help="what a MedicalNet-style checkpoint holds (depth, shortcut, entries)")
    p.add_argument("path")
    p.set_defaults(func=_checkpoint)

    p = sub.add_parser("verify-bundle", help="validate a bundle's metadata.json offline")
    p.add_argument("bundle")
    p.set_defaults(func=_verify)

    p = sub.add_parser("release", help="package a trained bundle: checked weights, TorchScript, checksums, zip")
    p.add_argument("bundle", help="bundle folder with models/model.pt")
    p.add_argument("--output", "-o", required=True, help="folder that receives <name>/ and <name>_v<version>.zip")
    p.add_argument("--version", default=None, help="new version (default: patch bump of the metadata's version)")
    p.add_argument("--notes", default=None, help="changelog text (the evaluation figures are appended)")
    p.add_argument("--eval-metrics", default=None, help="figures of these weights (default: models/model_metrics.json)")
    p.add_argument("--no-torchscript", action="store_true", help="release without models/model.ts")
    p.add_argument("--key-in-ckpt", default=None, help="entry of a nested model.pt holding the state dict")
    p.add_argument("--include", action="append", default=[], help="another bundle file to release (repeatable)")
    p.add_argument("--url-base", default=None, help="where the weights will be hosted (url entries of large_files.yml)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing release in the output folder")
    p.add_argument("--push-to-hf-hub", default=None, metavar="REPO_ID", help="then upload to this Hugging Face repo")
    p.add_argument("--dry-run", action="store_true", help="with --push-to-hf-hub: list the files, upload nothing")
    p.set_defaults(func=_release)

    p = sub.add_parser("onboard", help="check a dataset folder: datalist JSON, Markdown report, bundle settings")
    p.add_argument("path", help="dataset folder (Decathlon, nnU-Net raw, AbdomenAtlas, image folders) or CSV")
    p.add_argument("--output", "-o", required=True, help="datalist JSON to write (usable entries only)")
    p.add_argument("--layout", default="auto")
    p.add_argument("--report", default=None, help="Markdown report to write (default: <output stem>_report.md)")
    p.add_argument("--max-cases", type=int, default=None, help="read the voxels of at most this many cases")
    p.set_defaults(func=_onboard)
    p = sub.add_parser("sources", help="list the pre-trained starts the fine-tuning bundles can load")
    p.add_argument("--family", default=None, choices=["medicalnet", "suprem", "imagenet2d", "vdt", "bundle"])
    p.add_argument("--verbose", "-v", action="store_true", help="file, download location, format, heads, citation")
    p.set_defaults(func=_sources)

    p = sub.add_parser("benchmark", help="measure what pre-training buys: scratch against each pre-trained start")
    p.add_argument("kind", choices=["transfer"])
    p.add_argument("--bundle", default="bundles/transfer_segmentation", help="a fine-tuning bundle folder")
    p.add_argument("--arm", action="append", required=True,
                   help="[label=]source[:path][@architecture], e.g. scratch, med3d=medicalnet-resnet10:resnet_10.pth")
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0], help="label fractions, e.g. 0.1 0.25 0.5 1")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--iterations", type=int, default=100, help="training iterations of every run")
    p.add_argument("--val-every", type=int, default=20, help="iterations between validations")
    p.add_argument("--iterations-per-epoch", type=int, default=None)
    p.add_argument("--metric", default=None, help="validation metric (default: the bundle's first eval_metrics)")
    p.add_argument("--set", action="append", default=[], help="bundle setting key=value (JSON value), repeatable")
    p.add_argument("--output", "-o", default="transfer_benchmark", help="output folder (resumable)")
    p.set_defaults(func=_benchmark)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"monai-ext {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
