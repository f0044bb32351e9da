"""The ``monai-ext`` command: built-in data, datalists, checkpoint inspection and bundle checks.

Bundles themselves run with MONAI's own CLI (``python -m monai.bundle run ...``); this command covers what MONAI's
CLI does not.
"""

from __future__ import annotations

import argparse
import json
import logging
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
    from monai_ext.data.datalists import build_datalist

    datalist, report = build_datalist(args.path, layout=args.layout)
    print(report.summary())
    if args.output:
        with open(args.output, "w") as f:
            json.dump(datalist, f, indent=2, default=str)
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
    p.add_argument("--output", "-o", default=None, help="datalist JSON to write")
    p.set_defaults(func=_datalist)

    p = sub.add_parser("checkpoint-info", help="what a MedicalNet-style checkpoint holds (depth, shortcut, entries)")
    p.add_argument("path")
    p.set_defaults(func=_checkpoint)

    p = sub.add_parser("verify-bundle", help="validate a bundle's metadata.json offline")
    p.add_argument("bundle")
    p.set_defaults(func=_verify)
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
