"""RandomResizedCrop + horizontal flip as batched tensor operations on the training device.

The CPU path (`pretraining_transform`, or `finetuning_transform` without RandAugment) crops, resizes and flips each
image in a loader worker: 0.45 ms of a core per pre-training image (`transforms.py`), so feeding a GPU that trains
15,000 images/s would take every core of a node. Here the work is split in two:

- in the loader, `CropDraws` decodes the image (8-bit images stay uint8) and draws the crop box and the flip with
  the very transform objects of the CPU path, from the generators `TransformedCorpus` seeds with (seed, epoch,
  image): the same draws in the same order, so both paths crop the same box and a resumed run draws what an
  uninterrupted one would have;
- on the device, `BatchedResizedCrop` resamples the whole batch with two batched matrix products per image,
  out = rows @ image @ columnsᵀ, whose weights are the antialiased bicubic kernel (Keys, a = -0.5, widened by the
  downscaling factor, renormalised at the window's edges) that torchvision's `resize(..., antialias=True)` and PIL
  use. A horizontal flip is the column weights in reverse order. Images of different sizes in one batch are
  zero-padded to the largest; the padding has zero weight. The products are dense over the padded image: a small
  share of a GPU's step, but on a CPU more core time than a banded kernel, so on a CPU device the batch is
  resampled image by image with torch's antialiased bicubic `interpolate` (the kernel torchvision's resize calls;
  the flip and normalisation stay batched).

`split_for_device(transform)` turns a CPU transform into the two halves, and refuses a transform with any other
step (RandAugment's PIL operations have no batched equivalent here).

Agreement with the CPU path on the same draws (tests/test_device_augmentation.py): torchvision's float kernel
(pre-training) to within float32 rounding; PIL's 8-bit two-pass kernel (timm's fine-tuning crop), emulated pass by
pass, to within its fixed-point weights (one 8-bit step at most).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data.transforms import MaybeToTensor, RandomResizedCropAndInterpolation
from torchvision import transforms as v1
from torchvision.transforms import InterpolationMode, v2

from .transforms import RadiographTransform, radiograph_tensor

__all__ = ["BatchedResizedCrop", "CropDraws", "collate_pixels", "resampling_weights", "split_for_device"]

_BICUBIC_A = -0.5  # PIL's bicubic, which torchvision's antialiased resize follows


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    near = ((_BICUBIC_A + 2) * x - (_BICUBIC_A + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * _BICUBIC_A
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resampling_weights(start: torch.Tensor, length: torch.Tensor, extent: int, size: int) -> torch.Tensor:
    """(B, size, extent) weights that resample each example's window [start, start + length) of an axis of
    `extent` pixels to `size` pixels, as `resize(crop(...), antialias=True, interpolation=BICUBIC)` does."""
    scale = length.to(torch.float32) / size
    stretch = scale.clamp(min=1.0)  # antialiasing: the kernel widens by the downscaling factor
    outputs = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5
    centers = start.to(torch.float32)[:, None] + scale[:, None] * outputs  # (B, size), in input pixels
    inputs = torch.arange(extent, device=start.device)
    weights = _bicubic((inputs.to(torch.float32)[None, None] + 0.5 - centers[..., None]) / stretch[:, None, None])
    inside = (inputs[None] >= start[:, None]) & (inputs[None] < (start + length)[:, None])  # (B, extent)
    weights = weights * inside[:, None]
    return weights / weights.sum(-1, keepdim=True)


class CropDraws:
    """Loader half: decode one image and draw its crop box and flip as the CPU transform would.

    Takes an image cell as `datasets.Image(decode=False)` stores it ({"bytes", "path"}) or anything
    `load_radiograph` reads, and returns {"pixels": (C, H, W) uint8 for 8-bit images (the prepared cache's),
    float32 in [0, 1] otherwise; "crop": (top, left, height, width); "flip": bool}. `draw_box(pixels)` is the CPU
    transform's own RandomResizedCrop parameter draw (torchvision's `make_params` or timm's `get_params`);
    `flip_probability` its flip's p, drawn after the box with `torch.rand(1) < p`, as both libraries do.
    """

    # For `TransformedCorpus`: hand over undecoded cells (the prepared cache's netpbm bytes are parsed here, ten
    # times faster than through PIL).
    decodes_cells = True

    def __init__(self, crop: Any, flip_probability: float) -> None:
        self.crop = crop
        self.flip_probability = flip_probability
        # Also for `TransformedCorpus`: seed only the generators these draws use (torchvision's crop and both flips
        # draw from torch, timm's crop from Python's `random`).
        self.random_sources = ("torch",) if isinstance(crop, v2.RandomResizedCrop) else ("torch", "python")

    def draw_box(self, pixels: torch.Tensor) -> tuple[int, int, int, int]:
        if isinstance(self.crop, v2.RandomResizedCrop):
            box = self.crop.make_params([pixels])
            return box["top"], box["left"], box["height"], box["width"]
        return self.crop.get_params(pixels, self.crop.scale, self.crop.ratio)

    def __call__(self, image: Any) -> dict[str, Any]:
        pixels = _decode(image)
        box = self.draw_box(pixels)
        flip = bool(torch.rand(1) < self.flip_probability) if self.flip_probability > 0 else False
        return {"pixels": pixels, "crop": tuple(int(value) for value in box), "flip": flip}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop={self.crop}, flip_probability={self.flip_probability})"


_NETPBM_HEADER = re.compile(rb"P([56])\s+(\d+)\s+(\d+)\s+(\d+)\s")


def _decode(image: Any) -> torch.Tensor:
    if isinstance(image, Mapping):
        data = image.get("bytes")
        header = _NETPBM_HEADER.match(data) if data is not None else None
        if header is not None and int(header[4]) in (255, 65535):
            return _from_netpbm(data, header)
        image = Image.open(io.BytesIO(data)) if data is not None else image.get("path")
        if image is None:
            raise ValueError("an image cell has neither bytes nor a path")
    return _integer_or_float_pixels(image)


def _from_netpbm(data: bytes, header: re.Match) -> torch.Tensor:
    """Binary PGM (P5) / PPM (P6) without comments, as `cxr-vitmae prepare` stores images: maxval 255 as uint8,
    65535 as float32 / 65535 (what `load_radiograph` gives for PIL's 16-bit PGM)."""
    channels, width, height, maxval = (1 if header[1] == b"5" else 3), int(header[2]), int(header[3]), int(header[4])
    dtype = np.uint8 if maxval == 255 else np.dtype(">u2")
    count = channels * width * height
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header.end()).reshape(height, width, channels)
    if channels == 3 and (array[..., 0] == array[..., 1]).all() and (array[..., 0] == array[..., 2]).all():
        array = array[..., :1]
    array = array.transpose(2, 0, 1).copy()  # contiguous, and writable (frombuffer's view of bytes is not)
    if maxval == 255:
        return torch.from_numpy(array)
    return torch.from_numpy(array.astype(np.float32) / np.float32(65535))


def _integer_or_float_pixels(image: Any) -> torch.Tensor:
    # 8-bit PIL images (the prepared cache's PGMs, 8-bit PNG/JPEG) cross to the device as bytes, a quarter of float32.
    if isinstance(image, Image.Image) and image.mode in ("L", "RGB"):
        array = np.array(image)
        if array.ndim == 2:
            return torch.from_numpy(array)[None]
        if (array[..., 0] == array[..., 1]).all() and (array[..., 0] == array[..., 2]).all():
            return torch.from_numpy(np.ascontiguousarray(array[..., 0]))[None]
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    return radiograph_tensor(image)  # 16-bit, DICOM, arrays: float32 in [0, 1], never quantised


class BatchedResizedCrop:
    """Device half: a batch with "pixels", "crop" and "flip" (from `CropDraws` through `collate_pixels`) becomes a
    batch with normalised "pixel_values" (B, 3, height, width) for `size` = (height, width), computed in float32 on
    the batch's device."""

    def __init__(
        self,
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        eight_bit_passes: bool = False,
        kernel: str = "auto",
    ) -> None:
        if kernel not in ("auto", "dense", "banded"):
            raise ValueError(f"kernel={kernel!r}: expected auto, dense or banded")
        self.size = tuple(size)
        # "auto": dense products on accelerators, the banded per-image kernel on a CPU (`_dense`, `_banded`).
        self.kernel = kernel
        # PIL (timm's crop) resamples horizontally, then vertically, rounding and clipping to 8 bits after each pass;
        # torchvision's float kernel (pre-training) does neither.
        self.eight_bit_passes = eight_bit_passes
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = dict(batch)
        pixels, crop, flip = batch.pop("pixels"), batch.pop("crop"), batch.pop("flip")
        banded = self.kernel == "banded" or (self.kernel == "auto" and pixels.device.type == "cpu")
        resampled = self._banded(pixels, crop, flip) if banded else self._dense(pixels, crop, flip)
        channels = resampled.shape[1]
        mean = torch.tensor(self.mean * (channels // len(self.mean)), device=resampled.device)
        std = torch.tensor(self.std * (channels // len(self.std)), device=resampled.device)
        normalised = resampled.sub_(mean[:, None, None]).div_(std[:, None, None])
        batch["pixel_values"] = normalised.expand(-1, 3, -1, -1) if channels == 1 else normalised
        return batch

    def _dense(self, pixels: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Two batched products with dense weight matrices: a few large kernels, what a GPU runs best."""
        images = _unit_range(pixels)
        if self.eight_bit_passes and pixels.dtype != torch.uint8:  # the CPU path hands PIL 8 bits of 16, too
            images = _to_eight_bits(images)
        rows = resampling_weights(crop[:, 0], crop[:, 2], images.shape[-2], self.size[0])
        columns = resampling_weights(crop[:, 1], crop[:, 3], images.shape[-1], self.size[1])
        columns = torch.where(flip[:, None, None], columns.flip(1), columns)  # a flip is the columns reversed
        horizontal = images @ columns[:, None].transpose(-1, -2)  # (B, C, H, width)
        if self.eight_bit_passes:
            horizontal = _to_eight_bits(horizontal)
        resampled = rows[:, None] @ horizontal  # (B, C, height, width)
        return _to_eight_bits(resampled) if self.eight_bit_passes else resampled

    def _banded(self, pixels: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Per image, torch's antialiased bicubic `interpolate` of the crop (the kernel torchvision's resize calls):
        on a CPU it touches only the taps each output needs, where the dense products multiply whole images."""
        resampled = []
        for image, (top, left, height, width), flipped in zip(pixels, crop.tolist(), flip.tolist(), strict=True):
            window = _unit_range(image[None, :, top : top + height, left : left + width])
            if self.eight_bit_passes:  # PIL: horizontal pass, 8 bits, vertical pass, 8 bits
                if image.dtype != torch.uint8:
                    window = _to_eight_bits(window)
                horizontal = _to_eight_bits(_resize(window, (height, self.size[1])))
                one = _to_eight_bits(_resize(horizontal, self.size))
            else:
                one = _resize(window, self.size)
            resampled.append(one.flip(-1) if flipped else one)
        return torch.cat(resampled)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, mean={self.mean}, std={self.std}, "
            f"eight_bit_passes={self.eight_bit_passes}, kernel={self.kernel!r})"
        )


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)


def _unit_range(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.to(torch.float32) / 255 if pixels.dtype == torch.uint8 else pixels.to(torch.float32)


def _to_eight_bits(values: torch.Tensor) -> torch.Tensor:
    return (values * 255).round_().clamp_(0, 255) / 255


def collate_pixels(pixels: list[torch.Tensor]) -> torch.Tensor:
    """Stack (C, H, W) images of possibly different sizes, zero-padded at the bottom and right to the largest; uint8
    when every image is, else float32 in [0, 1]; grayscale expanded to three channels beside colour images."""
    channels = max(image.shape[0] for image in pixels)
    height = max(image.shape[1] for image in pixels)
    width = max(image.shape[2] for image in pixels)
    eight_bit = all(image.dtype == torch.uint8 for image in pixels)
    batch = torch.zeros(len(pixels), channels, height, width, dtype=torch.uint8 if eight_bit else torch.float32)
    for slot, image in zip(batch, pixels, strict=True):
        if not eight_bit and image.dtype == torch.uint8:
            image = image.to(torch.float32) / 255
        slot[:, : image.shape[1], : image.shape[2]] = image.expand(channels, -1, -1)
    return batch


def split_for_device(transform: RadiographTransform) -> tuple[CropDraws, BatchedResizedCrop]:
    """The loader half and the device half of a crop + flip + normalise training transform (torchvision v2 as in
    `pretraining_transform`, or timm's as in `finetuning_transform(auto_augment=None)`).

    Raises:
        ValueError: the transform has a step other than RandomResizedCrop (bicubic), horizontal flip, to-tensor and
            normalise, e.g. RandAugment; train with the CPU path (`--augment_on cpu`) instead.
    """
    steps = getattr(transform.augment, "transforms", [transform.augment])
    crop, flip, normalize = None, 0.0, None
    for step in steps:
        if isinstance(step, (v2.RandomResizedCrop, RandomResizedCropAndInterpolation)) and crop is None:
            interpolation = step.interpolation
            if interpolation not in (InterpolationMode.BICUBIC, Image.BICUBIC):
                raise ValueError(f"{step}: only bicubic RandomResizedCrop runs on the device, not {interpolation}")
            if isinstance(step, v2.RandomResizedCrop) and not step.antialias:
                raise ValueError(f"{step}: the device kernel is antialiased; this crop is not")
            crop = step
        elif isinstance(step, (v2.RandomHorizontalFlip, v1.RandomHorizontalFlip)) and crop is not None and not flip:
            flip = float(step.p)
        elif isinstance(step, (v2.Normalize, v1.Normalize)) and normalize is None:
            normalize = step
        elif not isinstance(step, (MaybeToTensor, v1.ToTensor, v2.ToDtype)):
            raise ValueError(
                f"{step!r} has no batched device version (only RandomResizedCrop, horizontal flip and normalisation "
                "do); use the CPU augmentation path for this transform"
            )
    if crop is None or normalize is None:
        raise ValueError(f"{transform!r}: expected a RandomResizedCrop and a Normalize step to move to the device")
    size = tuple(crop.size) if isinstance(crop.size, (tuple, list)) else (crop.size, crop.size)
    # timm's crop resizes 8-bit PIL images; torchvision v2's resizes float tensors.
    pil_kernel = isinstance(crop, RandomResizedCropAndInterpolation)
    device = BatchedResizedCrop(size * (3 - len(size)), normalize.mean, normalize.std, eight_bit_passes=pil_kernel)
    return CropDraws(crop, flip), device
