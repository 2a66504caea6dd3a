"""Do MAE anomaly maps find what the model has never seen? Nodules planted into healthy phantoms, scored by the
pointing game.

Each chosen healthy ('No Finding') phantom gets one nodule drawn by the generator's own code
(`data.phantoms.plant_nodule`) at a random position in the lung fields. The planted image and the untouched one
(the control) go through the model's image processor, the nodule's box through the same resize and center crop
(`localization.box_to_model_input`), and both images get `anomaly_map` with the same maskings. A hit is the map's
maximum falling inside the box (`localization.pointing_hit`, the Grad-CAM evaluation's rule). The control's hit rate
on the same boxes, and the chance rate of a uniformly random pixel (the share of the pixels the box overlaps), say
what a map that ignores the nodule scores.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike

import numpy as np
import torch

from ..data.nih import BoundingBox, read_splits
from ..data.phantoms import NODULE_RADII, plant_nodule
from ..errors import InputError
from ..models import CXRViTMAEForPreTraining, load_radiograph
from .localization import box_mask, box_to_model_input, pointing_hit
from .reconstruction import anomaly_map


@dataclass(frozen=True)
class PlantedNodules:
    """Model inputs with and without a planted nodule: `planted` and `control` are (N, C, H, W) normalised pixel
    values, `boxes` the nodules' boxes in those pixels."""

    planted: torch.Tensor
    control: torch.Tensor
    boxes: list[BoundingBox]


def plant_nodules(
    image_paths: Sequence[str | PathLike],
    processor,
    rng: np.random.Generator,
    *,
    radii: tuple[float, float] = NODULE_RADII,
) -> PlantedNodules:
    """One nodule planted into each image (see `plant_nodule`, drawing from `rng` in order), and both versions of
    every image through `processor`.

    Raises:
        ValueError: naming the image, when it is unreadable or not a square grayscale film, or when its nodule falls
            outside the processor's crop.
    """
    films, planted, boxes = [], [], []
    for path in image_paths:
        film = load_radiograph(path)
        try:
            image, box = plant_nodule(film, rng, radii=radii)
        except ValueError as error:
            raise InputError(f"{path}: {error}") from None
        height, width = film.shape
        mapped = box_to_model_input(box, (width, height), processor)
        if mapped is None:
            raise InputError(f"{path}: the planted nodule {box} lies outside the image processor's center crop")
        films.append(film)
        planted.append(image)
        boxes.append(mapped)
    pixel_values = processor(planted + films, return_tensors="pt")["pixel_values"]
    return PlantedNodules(planted=pixel_values[: len(films)], control=pixel_values[len(films) :], boxes=boxes)


def _peak_in_box(saliency: torch.Tensor, box: BoundingBox) -> bool:
    # Pixels never hidden have no error estimate (NaN); they can be no maximum.
    return pointing_hit(np.nan_to_num(saliency.float().cpu().numpy(), nan=-np.inf), box)


def evaluate_planted_nodules(
    model: CXRViTMAEForPreTraining,
    processor,
    data_dir: str | PathLike,
    *,
    num_images: int = 32,
    num_maskings: int = 8,
    seed: int = 0,
    split: str = "test",
    mask_ratio: float | None = None,
    nodule_scale: float = 1.0,
    batch_size: int = 16,
) -> dict:
    """Plant a nodule into `num_images` healthy phantoms of `data_dir`'s `split` and score the MAE's anomaly maps.

    Args:
        model, processor: the MAE and its image processor (`reconstruction.load_pretraining_model`).
        data_dir: a phantom corpus (`cxr-vitmae phantoms`).
        num_images: how many 'No Finding' images to plant into, drawn without replacement.
        num_maskings: K of `anomaly_map`.
        seed: seeds the choice of images, the nodules and the maskings.
        split: the NIH split to draw from; the default keeps to images pre-training never saw.
        mask_ratio: fraction of patches hidden per masking; default the model's.
        nodule_scale: multiplies the generator's nodule radii (`NODULE_RADII`); about 3 gives its Mass sizes.
        batch_size: images per forward pass.

    Returns:
        A JSON-ready dict: the settings, `hit_rate` (planted images), `control_hit_rate` (the same boxes on the
        untouched images), `chance_hit_rate` (mean share of the pixels the boxes overlap), and per image `image_id`,
        `box` ([x, y, w, h] in model-input pixels), `hit` and `control_hit`.
    """
    if num_images < 1:
        raise InputError(f"num_images must be at least 1, got {num_images}")
    if num_maskings < 1:
        raise InputError(f"num_maskings must be at least 1, got {num_maskings}")
    if nodule_scale <= 0:
        raise InputError(f"nodule_scale must be positive, got {nodule_scale}")
    splits = read_splits(data_dir)
    if split not in splits:
        raise InputError(f"split {split!r}: expected one of {', '.join(splits)}")
    healthy = [record for record in splits[split] if not any(record.labels)]
    if len(healthy) < num_images:
        raise InputError(
            f"{data_dir}: the {split} split has {len(healthy)} 'No Finding' image(s); {num_images} were asked for"
        )
    rng = np.random.default_rng(seed)
    chosen = [healthy[index] for index in sorted(rng.choice(len(healthy), size=num_images, replace=False))]
    radii = (NODULE_RADII[0] * nodule_scale, NODULE_RADII[1] * nodule_scale)
    device = next(model.parameters()).device

    cases, box_shares = [], []
    for start in range(0, num_images, batch_size):
        batch = chosen[start : start + batch_size]
        inputs = plant_nodules([record.path for record in batch], processor, rng, radii=radii)
        # One seed for both: each planted image and its control are masked alike, so only the nodule differs.
        maps = [
            anomaly_map(model, pixel_values.to(device), num_maskings, seed + start, mask_ratio=mask_ratio)
            for pixel_values in (inputs.planted, inputs.control)
        ]
        height, width = inputs.planted.shape[-2:]
        for record, box, planted_map, control_map in zip(batch, inputs.boxes, *maps, strict=True):
            box_shares.append(float(box_mask(box, (height, width)).mean()))
            cases.append(
                {
                    "image_id": record.image_id,
                    "box": [round(value, 3) for value in (box.x, box.y, box.w, box.h)],
                    "hit": _peak_in_box(planted_map, box),
                    "control_hit": _peak_in_box(control_map, box),
                }
            )

    return {
        "data_dir": str(data_dir),
        "split": split,
        "n_images": num_images,
        "num_maskings": num_maskings,
        "mask_ratio": model.config.mask_ratio if mask_ratio is None else mask_ratio,
        "nodule_scale": nodule_scale,
        "seed": seed,
        "input_size": [int(height), int(width)],
        "hit_rate": float(np.mean([case["hit"] for case in cases])),
        "control_hit_rate": float(np.mean([case["control_hit"] for case in cases])),
        "chance_hit_rate": float(np.mean(box_shares)),
        "images": cases,
    }
