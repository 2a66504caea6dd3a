"""Planting a nodule into a phantom image that already exists, the way the generator draws the Nodule finding: the
anomaly-detection experiments (`explain.anomaly`) compare the planted image with the untouched one."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ...errors import InputError
from ..nih import BoundingBox
from .anatomy import Anatomy, build_anatomy
from .arguments import MIN_SIZE
from .canvas import Canvas, Frame, tight_box
from .findings import NODULE_RADII, draw_round
from .plan import ANATOMY_KEYS, ImagePlan
from .render import FIELD_DROP, FIELD_SCALE, PA_CONTRAST


@lru_cache(maxsize=1)
def _average_anatomy() -> Anatomy:
    """The anatomy `render` varies around: a PA film of a patient with every per-patient and per-image variation at
    zero (with no spread, `build_anatomy` ignores its random draws)."""
    spec = ImagePlan(
        index=0,
        file_name="",
        patient=0,
        follow_up=0,
        age=0,
        gender="M",
        view="PA",
        split="",
        findings=(),
        anatomy=dict.fromkeys(ANATOMY_KEYS, 0.0),
    )
    return build_anatomy(spec, np.random.default_rng(0), 0.0, {}, ())


def plant_nodule(
    image: np.ndarray, rng: np.random.Generator, *, strength: float = 1.0, radii: tuple[float, float] = NODULE_RADII
) -> tuple[np.ndarray, BoundingBox]:
    """Draw one nodule into an existing phantom image, the way the generator draws the Nodule finding, and return the
    planted copy and the nodule's box.

    The opacity is the generator's own round-opacity drawing (position in a random lung, radius, density), placed on
    the average phantom anatomy because a corpus does not store each image's: in 755 plantings into 151 healthy
    phantoms, 98.3 / 99.2 / 99.7 % of the centres (hard / medium / easy) landed inside that image's own lung
    outline. It is added to the attenuation behind each pixel, through the film curve inverted at the nominal PA
    contrast, so it brightens the film as if it had been drawn with the image.

    Args:
        image: a square (H, H) float array in [0, 1], e.g. `load_radiograph` of a phantom PNG (H ≥ 32).
        rng: the random stream that picks the lung, the position, the radius and the density.
        strength: the generator's conspicuity k in (0, 1]; it scales the density and, by a quarter, the radius.
        radii: radius range in patient units (the half-width of the field of view is about 1.07); the default is
            the generator's Nodule range.

    Returns:
        `(planted, box)`: a copy of `image` (same dtype) with the nodule, and a `BoundingBox` labelled `Nodule` in
        pixels of `image`, the tight box of every pixel the nodule covers. Pixels outside the box are unchanged.

    Raises:
        ValueError: `image` is not a square 2-D array of values in [0, 1], an argument is out of range, or the
            nodule drawn is smaller than a pixel at this image size.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.shape[0] != image.shape[1] or image.shape[0] < MIN_SIZE:
        raise InputError(
            f"image has shape {image.shape}; expected a square (H, H) array with H >= {MIN_SIZE}, as phantoms are"
        )
    if not np.issubdtype(image.dtype, np.floating):
        raise InputError(f"image has dtype {image.dtype}; expected floats in [0, 1] (as load_radiograph returns)")
    low, high = float(image.min()), float(image.max())
    if not 0 <= low <= high <= 1:  # also false for NaN
        raise InputError(f"image values span [{low}, {high}]; expected floats in [0, 1]")
    if not 0 < strength <= 1:
        raise InputError(f"strength must be in (0, 1], got {strength}")
    if len(radii) != 2 or not 0 < radii[0] <= radii[1]:
        raise InputError(f"radii must be (low, high) with 0 < low <= high, got {radii}")

    size = image.shape[0]
    # The average frame of `render`: no shift across, no rotation.
    canvas = Canvas(Frame(size, FIELD_SCALE, (0.0, FIELD_DROP), 0.0))
    draw_round(canvas, _average_anatomy(), rng, float(strength), "Nodule", (float(radii[0]), float(radii[1])), 1)
    covered = canvas.tissue > 0
    if not covered.any():
        raise InputError(
            f"the nodule drawn is smaller than one pixel of a {size}x{size} image; use a larger image or larger radii"
        )
    # Half a gray level from black and white keeps the logit finite.
    film = np.clip(image[covered].astype(np.float64), 0.5 / 255, 1 - 0.5 / 255)
    logit = np.log(film) - np.log1p(-film) + canvas.tissue[covered] / PA_CONTRAST
    planted = image.copy()
    planted[covered] = 1.0 / (1.0 + np.exp(-logit))
    return planted, tight_box("Nodule", covered)
