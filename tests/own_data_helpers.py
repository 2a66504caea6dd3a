"""A user's own data as users have it, made from NIH-layout phantoms: one flat folder of mixed files (8-bit PNG,
16-bit PNG, JPEG, DICOM without suffix and with), one table with the user's own column names, MRNs as patient
ids, uncertain and blank label cells."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from test_image_processor import write_dicom

from cxr_vitmae.data import label_names, load_cxr_dataset
from cxr_vitmae.data.phantoms import generate_phantoms

# The user's column names for the NIH findings they keep.
OWN_LABELS = {"cardiomegaly": "Cardiomegaly", "pleural effusion": "Effusion", "Nodule?": "Nodule"}
FORMATS = ("png8", "png16", "jpeg", "dicom")


def _save(pixels: np.ndarray, path_stem: Path, kind: str) -> Path:
    """An 8-bit grayscale array as a file of `kind`."""
    if kind == "png8":
        path = path_stem.with_suffix(".png")
        Image.fromarray(pixels).save(path)
    elif kind == "png16":
        path = path_stem.with_suffix(".png")
        Image.fromarray(pixels.astype(np.uint16) * 257).save(path)
    elif kind == "jpeg":
        path = path_stem.with_suffix(".jpg")
        Image.fromarray(pixels).save(path, quality=95)
    else:
        path = path_stem.with_suffix(".dcm")
        write_dicom(path, pixels.astype(np.uint16) * 16, "MONOCHROME2")
    return path


def write_own_corpus(
    root: Path, num_images: int = 120, size: int = 48, seed: int = 1, *, split_column: bool = False,
    class_column: bool = False,
) -> Path:  # fmt: skip
    """`root/scans/*` and `root/labels.csv` (columns `Image Path`, `MRN`, the `OWN_LABELS`, optionally `fold` with
    NIH's own split, or `finding` with one class per image instead of the label columns). Returns `root`."""
    phantoms = generate_phantoms(root / "phantoms", num_images, size=size, seed=seed, difficulty="easy").output_dir
    splits = load_cxr_dataset("nih-chestxray14", phantoms, cache_dir=root / "cache")
    scans = root / "scans"
    scans.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = label_names("nih-chestxray14")
    rows = []
    for split, dataset in splits.items():
        for example in dataset:
            pixels = np.asarray(example["image"].convert("L"))
            kind = FORMATS[len(rows) % len(FORMATS)]
            path = _save(pixels, scans / f"scan_{len(rows):04d}", kind)
            findings = dict(zip(names, example["labels"], strict=True))
            row = {"Image Path": f"scans/{path.name}", "MRN": f"MRN-{int(example['patient_id']):06d}"}
            if class_column:
                row["finding"] = (
                    "effusion" if findings["Effusion"] else "cardiomegaly" if findings["Cardiomegaly"] else "other"
                )
            else:
                for column, finding in OWN_LABELS.items():
                    draw = rng.random()
                    row[column] = "" if draw < 0.08 else "-1" if draw < 0.15 else str(int(findings[finding]))
            if split_column:
                row["fold"] = {"train": "train", "validation": "val", "test": "test"}[split]
            rows.append(row)
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def own_options(*, split_column: bool = False, class_column: bool = False) -> dict:
    """The `csv` options that read `write_own_corpus`'s table."""
    options = {"image_column": "Image Path", "patient_column": "MRN", "validation_fraction": 0.25}
    if class_column:
        options["class_column"] = "finding"
    else:
        options["label_columns"] = list(OWN_LABELS)
    if split_column:
        options["split_column"] = "fold"
    else:
        options["test_fraction"] = 0.25
    return options
