"""How well Grad-CAM maps localise NIH's `BBox_List_2017.csv` boxes: pointing game, IoU, AP25 / AP50.

Protocol (`localize`):

1. Every box of the split (NIH: 984 boxes on 880 official test images, 8 classes) is mapped into the model's input
   pixels through the same resize and center crop as the model's image processor (`box_to_model_input`): 1024 px →
   short side 256 → crop 224 for the paper's models, scaled to the model's image size. Boxes left entirely outside
   the crop are skipped and counted.
2. The Grad-CAM map of the box's class (`compute_gradcam`, at the model's input resolution) is scored against it:
   - pointing game: a hit when the map's maximum lies inside the box (a constant map points nowhere);
   - IoU of the box with the map binarised at a fraction t of its maximum (`map >= t * max`), for every candidate t.
   A box covers every pixel it overlaps.
3. The boxes are split by patient, reproducibly (SHA-256 of `"<seed>:<patient id>"`, as the NIH validation carve):
   `tune_fraction` of the patients choose the single threshold t with the best mean IoU, and every number is reported
   on the other patients' boxes only, per class and overall (box-weighted). Tuning the threshold on the very boxes it
   is scored on, as published Grad-CAM tables do, is optimistic.

AP25 / AP50 are the fractions of boxes with IoU > 0.25 / > 0.5.
"""

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.image_transforms import get_resize_output_image_size
from transformers.image_utils import ChannelDimension

from ..data.nih import BoundingBox
from ..errors import InputError
from ..evaluation.evaluate_model import load_split
from ..predict import load_classifier
from .gradcam import compute_gradcam, gradcam_target

__all__ = [
    "DEFAULT_THRESHOLDS",
    "BoxScore",
    "box_ious",
    "box_mask",
    "box_to_model_input",
    "localize",
    "pointing_hit",
    "score_box",
    "summarize_localization",
    "tuning_patients",
]

# Fractions of the map's maximum tried when binarising it for IoU.
DEFAULT_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(1, 20))


def _resize_output_size(processor, width: int, height: int) -> tuple[int, int]:
    """(width, height) after the processor's resize, computed by transformers' own size rule."""
    size = processor.size
    if size.shortest_edge and not size.longest_edge:
        # get_resize_output_image_size only reads the image's shape: a zero-stride view stands in for the image.
        shape_only = np.broadcast_to(np.float32(0), (1, height, width))
        new_height, new_width = get_resize_output_image_size(
            shape_only, size.shortest_edge, default_to_square=False, input_data_format=ChannelDimension.FIRST
        )
        return new_width, new_height
    if size.height and size.width:
        return size.width, size.height
    raise ValueError(f"image processor size {size}: box mapping supports shortest_edge, or height and width")


def box_to_model_input(box: BoundingBox, image_size: tuple[int, int], processor) -> BoundingBox | None:
    """`box` (pixels of an image of `image_size` = (width, height)) in the pixels of the processor's output: scaled
    by the resize, shifted by the center crop (offsets truncated as transformers crops), clipped to the crop.

    Returns:
        The mapped box, or None when it lies entirely outside the crop.
    """
    width, height = image_size
    if width < 1 or height < 1:
        raise ValueError(f"image_size {image_size}: expected a positive (width, height)")
    resized_width, resized_height = _resize_output_size(processor, width, height) if processor.do_resize else image_size
    scale_x, scale_y = resized_width / width, resized_height / height
    if processor.do_center_crop:
        crop_width, crop_height = processor.crop_size.width, processor.crop_size.height
        # transformers crops at int((size - crop) / 2), which also equals minus the padding when the crop is larger.
        left, top = int((resized_width - crop_width) / 2.0), int((resized_height - crop_height) / 2.0)
    else:
        crop_width, crop_height, left, top = resized_width, resized_height, 0, 0
    x0 = max(box.x * scale_x - left, 0.0)
    y0 = max(box.y * scale_y - top, 0.0)
    x1 = min((box.x + box.w) * scale_x - left, float(crop_width))
    y1 = min((box.y + box.h) * scale_y - top, float(crop_height))
    if x1 <= x0 or y1 <= y0:
        return None
    return BoundingBox(box.label, x0, y0, x1 - x0, y1 - y0)


def box_mask(box: BoundingBox, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) boolean mask of the pixels `box` overlaps (pixel (i, j) spans [j, j+1) x [i, i+1)), so that no box of
    positive size inside the image is empty, however small."""
    mask = np.zeros(shape, dtype=bool)
    columns = slice(max(math.floor(box.x), 0), min(math.ceil(box.x + box.w), shape[1]))
    rows = slice(max(math.floor(box.y), 0), min(math.ceil(box.y + box.h), shape[0]))
    mask[rows, columns] = True
    return mask


def pointing_hit(heatmap: np.ndarray, box: BoundingBox) -> bool:
    """Whether the map's maximum (the first, in row-major order, if tied) lies in `box`; a constant map never hits."""
    if heatmap.max() == heatmap.min():
        return False
    row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return bool(box_mask(box, heatmap.shape)[row, column])


def box_ious(heatmap: np.ndarray, box: BoundingBox, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """IoU of `box` with `heatmap >= t * max(heatmap)` for every t in `thresholds` (0 where the map is all <= 0)."""
    target = box_mask(box, heatmap.shape)
    peak = float(heatmap.max())
    ious = np.zeros(len(thresholds), dtype=np.float64)
    if peak <= 0:
        return ious
    for index, threshold in enumerate(thresholds):
        region = heatmap >= threshold * peak
        ious[index] = np.logical_and(region, target).sum() / np.logical_or(region, target).sum()
    return ious


@dataclass(frozen=True)
class BoxScore:
    """One box scored against the map of its class: `hit` (pointing game), `ious` (one per threshold) and
    `chance_hit` (the share of the map's pixels the box overlaps: the hit probability of a uniformly random point)."""

    image_id: str
    patient_id: str
    label: str
    hit: bool
    ious: np.ndarray
    chance_hit: float


def score_box(
    heatmap: np.ndarray,
    box: BoundingBox,
    *,
    image_id: str,
    patient_id: str,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> BoxScore:
    """`box` (in the map's pixels) scored against `heatmap`, the map of the box's class."""
    return BoxScore(
        image_id,
        patient_id,
        box.label,
        pointing_hit(heatmap, box),
        box_ious(heatmap, box, thresholds),
        float(box_mask(box, heatmap.shape).mean()),
    )


def _check_tune_fraction(fraction: float) -> None:
    if not 0 < fraction < 1:
        raise InputError(f"tune_fraction={fraction}: expected a number strictly between 0 and 1")


def tuning_patients(patient_ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The `round(fraction * n)` patients (at least 1, at most n - 1) that rank first by SHA-256 of
    `"<seed>:<patient id>"`: the same set on every platform and run."""
    patients = sorted(set(patient_ids))
    if len(patients) < 2:
        raise InputError(
            f"the boxes come from {len(patients)} patient(s); choosing the threshold on some patients and reporting "
            "on others needs at least 2"
        )
    _check_tune_fraction(fraction)
    count = min(max(round(fraction * len(patients)), 1), len(patients) - 1)
    ranked = sorted(patients, key=lambda patient: hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest())
    return set(ranked[:count])


def _scores_at(scores: Sequence[BoxScore], threshold_index: int) -> dict[str, Any]:
    ious = np.array([score.ious[threshold_index] for score in scores])
    return {
        "n_boxes": len(scores),
        "pointing_game": float(np.mean([score.hit for score in scores])),
        "chance_pointing_game": float(np.mean([score.chance_hit for score in scores])),
        "mean_iou": float(ious.mean()),
        "ap25": float((ious > 0.25).mean()),
        "ap50": float((ious > 0.5).mean()),
    }


def summarize_localization(
    scores: Sequence[BoxScore],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    tune_fraction: float = 0.5,
    seed: int = 0,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Choose the threshold on the tuning patients' boxes (best mean IoU, the lowest threshold if tied) and report
    pointing game, mean IoU, AP25 and AP50 on the other patients' boxes, overall and per class (in `label_names`
    order when given, else sorted; classes without reported boxes are left out)."""
    if not scores:
        raise ValueError("no boxes to score")
    if any(len(score.ious) != len(thresholds) for score in scores):
        raise ValueError(f"every BoxScore needs one IoU per threshold ({len(thresholds)})")
    tuning_set = tuning_patients([score.patient_id for score in scores], tune_fraction, seed)
    tuning = [score for score in scores if score.patient_id in tuning_set]
    reported = [score for score in scores if score.patient_id not in tuning_set]
    tuning_mean_ious = np.mean([score.ious for score in tuning], axis=0)
    best = int(np.argmax(tuning_mean_ious))
    present = {score.label for score in reported}
    order = [name for name in label_names if name in present] if label_names is not None else sorted(present)
    return {
        "threshold": {
            "fraction_of_max": float(thresholds[best]),
            "selected_by": "mean IoU on the tuning patients' boxes",
            "tuning_mean_iou": float(tuning_mean_ious[best]),
            "candidates": [float(t) for t in thresholds],
        },
        "tuning": {"n_boxes": len(tuning), "n_patients": len(tuning_set)},
        "n_patients": len({score.patient_id for score in reported}),
        **_scores_at(reported, best),
        "per_class": {name: _scores_at([s for s in reported if s.label == name], best) for name in order},
        "tune_fraction": tune_fraction,
        "seed": seed,
    }


def _boxed_pairs(rows, label2id: dict[str, int]) -> tuple[list[tuple[int, int]], int]:
    """(row index, label index) for every image and boxed class the model predicts, sorted by label so that maps
    of one class are computed in full batches; and the number of boxes whose class the model does not predict."""
    pairs, unpredicted = set(), 0
    for index, boxes in enumerate(rows["boxes"]):
        for box in boxes:
            if box["label"] in label2id:
                pairs.add((index, label2id[box["label"]]))
            else:
                unpredicted += 1
    return sorted(pairs, key=lambda pair: (pair[1], pair[0])), unpredicted


def localize(
    model_dir: str | Path,
    dataset: str,
    data_dir: str | Path,
    *,
    split: str = "test",
    tune_fraction: float = 0.5,
    seed: int = 0,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Grad-CAM localisation of the classifier in `model_dir` on the boxes of `split` of `dataset` (see the module
    docstring for the protocol); the JSON-ready result.

    Raises:
        ValueError: the model is not a classifier, the corpus has no boxes or none the model predicts, or the boxes
            come from a single patient.
    """
    _check_tune_fraction(tune_fraction)
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: expected a positive number of images")
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = load_classifier(model_dir, device)
    rows = load_split(dataset, data_dir, split, **options)
    if "boxes" not in rows.features:
        raise InputError(f"{dataset} has no bounding boxes to localise (nih-chestxray14's BBox_List_2017.csv has)")
    metadata = rows.select_columns(["boxes", "image_id", "patient_id"])
    pairs, unpredicted = _boxed_pairs(metadata, model.config.label2id)
    if not pairs:
        raise InputError(
            f"{dataset} {split}: no box of a class the model predicts ({unpredicted} boxes; the model predicts "
            f"{', '.join(model.config.id2label.values())})"
        )

    scores: list[BoxScore] = []
    outside_crop = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        for label_index in sorted({label for _, label in chunk}):
            indices = [index for index, label in chunk if label == label_index]
            images = [rows[index]["image"] for index in indices]
            pixel_values = processor(images, return_tensors="pt")["pixel_values"]
            heatmaps = compute_gradcam(model, pixel_values, label_index)
            map_size = list(heatmaps.shape[1:])
            for index, image, heatmap in zip(indices, images, heatmaps, strict=True):
                row = metadata[index]
                boxes = [
                    BoundingBox(**box) for box in row["boxes"] if box["label"] == model.config.id2label[label_index]
                ]
                mapped = [box_to_model_input(box, image.size, processor) for box in boxes]
                outside_crop += mapped.count(None)
                scores += [
                    score_box(
                        heatmap, box, image_id=row["image_id"], patient_id=row["patient_id"], thresholds=thresholds
                    )
                    for box in mapped
                    if box is not None
                ]
    summary = summarize_localization(
        scores,
        thresholds,
        tune_fraction=tune_fraction,
        seed=seed,
        label_names=[model.config.id2label[i] for i in range(model.config.num_labels)],
    )
    layer = gradcam_target(model)[0]
    return {
        "dataset": dataset,
        "split": split,
        "method": "Grad-CAM",
        "target_layer": next(name for name, module in model.named_modules() if module is layer),
        "map_size": map_size,
        **summary,
        "skipped_boxes": {"outside_crop": outside_crop, "class_not_predicted": unpredicted},
        "checkpoint": str(model_dir),
    }
