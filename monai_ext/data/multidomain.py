"""Multi-domain datalists for Med3D co-training ("3DSeg-8", Chen et al. 2019, arXiv:1904.00625).

Several Decathlon-layout task folders become one datalist whose items carry their dataset index (``domain``), name
and the median voxel spacing of their own dataset (``target_spacing``, computed from the headers). The eight MSD tasks
of 3DSeg-8 are the default task list for a user who points ``dataset_dir`` at the Decathlon downloads; MONAI's
Decathlon download can fetch them for users with the network.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import nibabel as nib
import numpy as np

from monai_ext.data.datalists import DatalistError, decathlon_datalist, read_decathlon_metadata, split_datalist

__all__ = [
    "MSD_3DSEG8_TASKS",
    "BUILTIN_PRETRAINING_TASKS",
    "volume_spacing_ras",
    "median_spacing",
    "multidomain_datalist",
    "domain_sampling_weights",
    "download_msd_tasks",
    "save_domains",
    "load_domains",
]

logger = logging.getLogger(__name__)

#: The eight Medical Segmentation Decathlon tasks that make up 3DSeg-8 (all but lung and colon).
MSD_3DSEG8_TASKS: tuple[str, ...] = (
    "Task01_BrainTumour", "Task02_Heart", "Task03_Liver", "Task04_Hippocampus",
    "Task05_Prostate", "Task07_Pancreas", "Task08_HepaticVessel", "Task09_Spleen",
)  # fmt: skip

#: The built-in synthetic tasks used for pre-training by default (Task105 is held out for fine-tuning).
BUILTIN_PRETRAINING_TASKS: tuple[str, ...] = (
    "Task101_SynthBrainMR", "Task102_SynthLiverCT", "Task103_SynthProstateMR", "Task104_SynthSpleenCT",
)  # fmt: skip


def volume_spacing_ras(path: str) -> tuple[float, float, float]:
    """Voxel spacing of a volume in the axis order it has after reorientation to RAS (read from the header only)."""
    if path.endswith((".nii", ".nii.gz")):
        affine = nib.load(path).affine
    else:
        import itk  # NRRD, MHA, DICOM: read the header through ITK

        reader = itk.ImageFileReader.New(FileName=path)
        reader.UpdateOutputInformation()
        img = reader.GetOutput()
        direction = np.asarray(img.GetDirection())
        affine = np.eye(4)
        affine[:3, :3] = direction @ np.diag(np.asarray(img.GetSpacing()))
    columns = affine[:3, :3]
    zooms = np.sqrt((columns**2).sum(axis=0))
    world_axis = np.abs(columns).argmax(axis=0)  # voxel axis i points mostly along world axis world_axis[i]
    spacing = np.empty(3)
    spacing[world_axis] = zooms
    return tuple(float(s) for s in spacing)


def median_spacing(items: Sequence[dict], key: str = "image") -> tuple[float, float, float]:
    """Median RAS-ordered spacing of the volumes of one dataset (first channel file for multi-file images)."""
    if not items:
        raise DatalistError("cannot compute a median spacing of an empty dataset")
    spacings = []
    for item in items:
        path = item[key][0] if isinstance(item[key], (list, tuple)) else item[key]
        spacings.append(volume_spacing_ras(path))
    return tuple(float(s) for s in np.median(np.asarray(spacings), axis=0))


def _resolve_task_dir(dataset_dir: str, task: str) -> str:
    path = task if os.path.isabs(task) else os.path.join(dataset_dir, task)
    if not os.path.isdir(path):
        raise DatalistError(
            f"task folder {path} not found. Point dataset_dir at the folder that holds the Decathlon task folders "
            f"(currently {dataset_dir}), list the tasks you have in 'tasks', or fetch MSD tasks with "
            f"monai_ext.data.download_msd_tasks(dataset_dir, tasks) where the network is available."
        )
    return path


def _case_id(item: dict) -> str:
    name = os.path.basename(item["image"][0] if isinstance(item["image"], (list, tuple)) else item["image"])
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _split_task(task_dir: str, items: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """The task's own ``splits.json`` ({"train": [case ids], "val": [...]}) when it has one, else a seeded split."""
    split_file = os.path.join(task_dir, "splits.json")
    if not os.path.exists(split_file):
        return split_datalist(items, val_fraction=val_fraction, seed=seed)
    import json

    with open(split_file, encoding="utf-8") as f:
        splits = json.load(f)
    train_ids, val_ids = set(splits.get("train", [])), set(splits.get("val", []) or splits.get("validation", []))
    if not train_ids or not val_ids:
        raise DatalistError(f"{split_file} must list case ids under 'train' and 'val'")
    train = [it for it in items if _case_id(it) in train_ids]
    val = [it for it in items if _case_id(it) in val_ids]
    if not train or not val:
        raise DatalistError(f"{split_file}: its case ids match no file of {task_dir} (ids are file names without extension)")
    logger.info(f"{os.path.basename(task_dir)}: using the split of {split_file}")
    return train, val


def multidomain_datalist(
    dataset_dir: str,
    tasks: Sequence[str],
    val_fraction: float = 0.2,
    seed: int = 0,
    max_cases_per_task: int | None = None,
) -> dict:
    """Compose one datalist from several Decathlon-layout tasks.

    Args:
        dataset_dir: folder holding the task folders (entries of ``tasks`` may also be absolute paths).
        tasks: task folder names, one dataset ("domain") each, in domain-index order.
        val_fraction: fraction of each task's cases held out for validation (a fixed, seeded split per task); a task
            folder with a ``splits.json`` (``{"train": [...], "val": [...]}``, case ids) uses that split instead.
        seed: seed of the split.
        max_cases_per_task: keep at most this many cases of each task (before splitting), for quick runs.

    Returns:
        ``{"training": [...], "validation": [...], "domains": [{"name", "num_classes", "labels", "modality",
        "spacing", "num_training", "num_validation", "path"}]}``; every item has ``image``, ``label``, ``domain``
        (index), ``domain_name`` and ``target_spacing``.
    """
    if not tasks:
        raise DatalistError("no task given: list at least one Decathlon task folder in 'tasks'")
    training, validation, domains = [], [], []
    for index, task in enumerate(tasks):
        task_dir = _resolve_task_dir(dataset_dir, task)
        meta = read_decathlon_metadata(task_dir)
        items = decathlon_datalist(task_dir, section="training")
        if max_cases_per_task:
            items = items[: int(max_cases_per_task)]
        spacing = median_spacing(items)
        name = os.path.basename(os.path.normpath(task_dir))
        for item in items:
            item.update(domain=index, domain_name=name, target_spacing=list(spacing))
        train, val = _split_task(task_dir, items, val_fraction, seed)
        labels = {int(k): v for k, v in meta.get("labels", {}).items()}
        domains.append(
            {
                "name": name,
                "num_classes": len(labels),
                "labels": labels,
                "modality": meta.get("modality", {}),
                "spacing": list(spacing),
                "num_training": len(train),
                "num_validation": len(val),
                "path": task_dir,
            }
        )
        training += train
        validation.append(val)
        logger.info(
            f"domain {index} {name}: {len(train)} train / {len(val)} val, {len(labels)} classes, "
            f"median spacing {tuple(round(s, 3) for s in spacing)}"
        )
    # interleave the validation cases of the datasets, so that the first n cases cover every dataset
    interleaved = [v[i] for i in range(max(map(len, validation), default=0)) for v in validation if i < len(v)]
    return {"training": training, "validation": interleaved, "domains": domains}


def domain_sampling_weights(items: Sequence[dict], mode: str = "balanced", temperature: float = 1.0) -> list[float]:
    """Per-item sampling weights across datasets.

    Args:
        items: datalist items with a ``domain`` entry.
        mode: "balanced" (every dataset drawn equally often), "proportional" (every volume equally often) or
            "temperature" (dataset probability proportional to size ** (1 / temperature)).
        temperature: used by "temperature"; 1 is proportional, large values approach balanced.
    """
    counts: dict[int, int] = {}
    for item in items:
        counts[item["domain"]] = counts.get(item["domain"], 0) + 1
    if mode == "balanced":
        share = {d: 1.0 for d in counts}
    elif mode == "proportional":
        share = {d: float(n) for d, n in counts.items()}
    elif mode == "temperature":
        share = {d: float(n) ** (1.0 / float(temperature)) for d, n in counts.items()}
    else:
        raise ValueError(f"sampling mode must be 'balanced', 'proportional' or 'temperature', got {mode!r}")
    total = sum(share.values())
    return [share[item["domain"]] / total / counts[item["domain"]] for item in items]


def download_msd_tasks(root: str, tasks: Sequence[str] = MSD_3DSEG8_TASKS) -> list[str]:
    """Download and extract Medical Segmentation Decathlon tasks with MONAI's resources (needs the network)."""
    from monai.apps import DecathlonDataset, download_and_extract

    paths = []
    for task in tasks:
        if task not in DecathlonDataset.resource:
            raise ValueError(f"{task} is not a Decathlon task known to MONAI: {sorted(DecathlonDataset.resource)}")
        target = os.path.join(root, task)
        if not os.path.isdir(target):
            tar = os.path.join(root, f"{task}.tar")
            download_and_extract(DecathlonDataset.resource[task], tar, root, hash_val=DecathlonDataset.md5[task])
        paths.append(target)
    return paths


def save_domains(domains: Sequence[dict], path: str) -> str:
    """Write the dataset descriptions of a co-training run (names, classes, spacings) next to its weights.

    Inference and fine-tuning read them back with :func:`load_domains`, so they need neither the training data nor
    the training settings to rebuild the network and its pre-processing.
    """
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    keep = ("name", "num_classes", "labels", "modality", "spacing")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump([{k: d[k] for k in keep if k in d} for d in domains], f, indent=2)
    os.replace(tmp, path)
    return path


def load_domains(path: str) -> list[dict]:
    """Read the dataset descriptions written by :func:`save_domains`."""
    import json

    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: it is written when the co-training bundle trains. Train first, or copy the "
            "domains.json that came with the weights next to them."
        )
    with open(path, encoding="utf-8") as f:
        domains = json.load(f)
    for d in domains:
        d["labels"] = {int(k): v for k, v in d.get("labels", {}).items()}
    return domains
