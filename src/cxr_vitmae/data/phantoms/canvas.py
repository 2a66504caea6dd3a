"""Where the renderer draws: the pixel grid of one image in patient coordinates (`Frame`), the attenuation layers and
boxes drawn on it (`Canvas`), and the shapes and textures everything is drawn from.

Patient coordinates (u, v): u across (patient's right on the viewer's left, as on a film), v down, both about
[-1, 1] over the field of view; each image maps them to pixels by a scale, a shift and a small rotation.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from ..nih import BoundingBox


@lru_cache(maxsize=4)
def _axis(size: int) -> np.ndarray:
    return (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - np.float32(1.0)


class Frame:
    """The pixel grid of one image in patient coordinates, with pixel windows for drawing local structures."""

    def __init__(self, size: int, scale: float, shift: tuple[float, float], angle: float):
        self.size, self.scale = size, scale
        self.tx, self.ty = shift
        self.cos, self.sin = float(np.cos(angle)), float(np.sin(angle))
        axis = _axis(size)
        x, y = (axis - np.float32(self.tx))[None, :], (axis - np.float32(self.ty))[:, None]
        c, s = np.float32(self.cos / scale), np.float32(self.sin / scale)
        self.u = c * x + s * y
        self.v = c * y - s * x
        # One pixel in patient units: soft edges are a pixel or two wide at every size.
        self.pixel = 2.0 / (size * scale)

    def window(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice] | None:
        us, vs = np.array([u0, u1, u0, u1]), np.array([v0, v0, v1, v1])
        xs = self.tx + self.scale * (self.cos * us - self.sin * vs)
        ys = self.ty + self.scale * (self.sin * us + self.cos * vs)
        half = self.size / 2.0
        c0, c1 = max(int(np.floor((xs.min() + 1) * half)), 0), min(int(np.ceil((xs.max() + 1) * half)) + 1, self.size)
        r0, r1 = max(int(np.floor((ys.min() + 1) * half)), 0), min(int(np.ceil((ys.max() + 1) * half)) + 1, self.size)
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1)


def ramp(distance, width: float):
    """0 outside, 1 inside a region given by a signed distance (positive inside), linear across `width`."""
    return np.clip(distance * np.float32(1.0 / width) + np.float32(0.5), 0.0, 1.0)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Band-limited noise of about unit variance: white noise on a coarse grid, bicubic-upsampled by PIL."""
    coarse = rng.standard_normal((max(cells[0], 2), max(cells[1], 2)), dtype=np.float32)
    image = Image.fromarray(coarse).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32)


def ridges(noise: np.ndarray, sharpness) -> np.ndarray:
    """Thin lines along the zero crossings of smooth noise: a branching network like vessels or interstitium."""
    line = np.clip(1.0 - np.abs(noise) * sharpness, 0.0, 1.0)
    return line * line


def sphere(du: np.ndarray, dv: np.ndarray, radius: float) -> np.ndarray:
    """Projected thickness of a ball, normalised to 1 at its centre."""
    return np.sqrt(np.clip(1.0 - (du * du + dv * dv) * np.float32(1.0 / radius**2), 0.0, 1.0))


class Canvas:
    """The attenuation layers of one image and the boxes of what was drawn on it."""

    def __init__(self, frame: Frame):
        shape = (frame.size, frame.size)
        self.frame = frame
        self.tissue = np.zeros(shape, np.float32)
        self.air = np.zeros(shape, np.float32)
        self.markings = np.zeros(shape, np.float32)
        self.boxes: list[BoundingBox] = []

    def box(self, label: str, change: np.ndarray, window: tuple[slice, slice], fraction: float = 0.2) -> None:
        """Record the tight box of the pixels where `change` (the finding's effect inside `window`) reaches
        `fraction` of its peak."""
        peak = float(change.max()) if change.size else 0.0
        if peak <= 0.0:
            return
        self.boxes.append(tight_box(label, change >= fraction * peak, (window[0].start, window[1].start)))


def tight_box(label: str, mask: np.ndarray, origin: tuple[int, int] = (0, 0)) -> BoundingBox:
    """The smallest box, in pixels, around the true pixels of `mask` (not all false), whose first pixel is at
    (row, column) `origin` of the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    r0, c0 = origin[0] + int(rows[0]), origin[1] + int(cols[0])
    r1, c1 = origin[0] + int(rows[-1]) + 1, origin[1] + int(cols[-1]) + 1
    return BoundingBox(label, float(c0), float(r0), float(c1 - c0), float(r1 - r0))


def bump(offset, width: float):
    """A smooth bump of height 1 and half-width `width` (cheaper than a Gaussian)."""
    inside = np.clip(1.0 - offset * offset * np.float32(1.0 / width**2), 0.0, 1.0)
    return inside * inside


def region(frame: Frame, cu: float, cv: float, ru: float, rv: float):
    """The pixel window of the box of half-sizes (ru, rv) around (cu, cv) and its patient coordinates relative to
    that centre; three `None` when the box lies outside the image."""
    window = frame.window(cu - ru, cu + ru, cv - rv, cv + rv)
    if window is None:
        return None, None, None
    return window, frame.u[window] - np.float32(cu), frame.v[window] - np.float32(cv)
