"""Training and evaluation transforms for chest radiographs, built from torchvision and timm.

Every transform takes one decoded-or-decodable image (a path, PIL image, numpy array or tensor: anything
`load_radiograph` reads, so 16-bit data is rescaled, never clipped, and DICOM works) and returns a float32 tensor
(3, H, W). Radiographs stay single-channel through every augmentation and become three channels only at the very
end, as an `expand` view, because the models take three channels: augmenting three identical copies costs about
2.5 times as much for the same result (see the timings below).

- `pretraining_transform`: the MAE recipe, RandomResizedCrop(224, scale 0.5-1, bicubic) + horizontal flip. It runs
  on float tensors, so 16-bit precision survives.
- `finetuning_transform`: timm's `create_transform` exactly as the paper's fine-tuning (RandomResizedCrop with
  timm's default scale 0.08-1, bicubic, flip, RandAugment `rand-m6-mstd0.5-inc1`, no colour jitter, no random
  erasing). RandAugment's operations are PIL operations on 8-bit images, so this is the one place where a 16-bit
  radiograph is quantised to 8 bits.
- `evaluation_transform`: resize the short side to 256 (bicubic, antialiased), center-crop 224: the same numbers as
  `CXRImageProcessor`, which uses the same torchvision kernels on float tensors.

`make_batch_transform(transform)` turns one of them into a function for `datasets.Dataset.with_transform`, and
`collate_radiographs` is the DataLoader `collate_fn` that moves grayscale batches between processes one channel wide.

Cost per image on one core (`torch.set_num_threads(1)`, median of 200 calls on the array and 40 on the file, the
1024x1024 file a `cxr-vitmae phantoms` PNG, so the right column includes PNG decoding). Measured on a 2-core AMD EPYC
shared with other jobs (load average about 4), so read the ratios rather than the absolute times; the data-loader
throughput is in `benchmarks/RESULTS.md` (`benchmarks/data_pipeline.py`):

=============  ===================  ========================
transform      256x256 uint8 array  1024x1024 8-bit PNG file
=============  ===================  ========================
pre-training   0.45 ms              15.2 ms
fine-tuning    0.88 ms              22.5 ms
evaluation     0.09 ms              15.6 ms
=============  ===================  ========================

timm's fine-tuning pipeline alone on a 256x256 image took 0.65 ms in mode "L" and 1.64 ms on the same image
converted to RGB, hence one channel until the end.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform
from torch.utils.data import default_collate
from torchvision.transforms import InterpolationMode, v2

from ..models.image_processing_cxr import CXRImageProcessor, load_radiograph

__all__ = [
    "CXR_MEAN",
    "CXR_STD",
    "BatchTransform",
    "RadiographTransform",
    "collate_radiographs",
    "evaluation_transform",
    "finetuning_transform",
    "make_batch_transform",
    "pretraining_transform",
    "radiograph_tensor",
]

# One source of truth for the normalisation: the image processor's (the paper's NIH statistics).
CXR_MEAN = float(CXRImageProcessor.image_mean[0])
CXR_STD = float(CXRImageProcessor.image_std[0])


def radiograph_tensor(image: Any) -> torch.Tensor:
    """(C, H, W) float32 in [0, 1]; C = 1 for grayscale, also for colour files whose three channels are equal."""
    array = load_radiograph(image)
    if array.ndim == 3:
        # Many corpora (COVIDx, some CheXpert exports) store grayscale X-rays as RGB.
        if np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]):
            array = array[..., 0]
        else:
            return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    return torch.from_numpy(array)[None]


def _to_pil_8bit(tensor: torch.Tensor) -> Image.Image:
    # The only place a 16-bit radiograph becomes 8-bit: RandAugment's PIL operations (equalize, posterize,
    # solarize, ...) are defined on 8-bit images only. 8-bit sources round-trip exactly.
    array = (tensor.numpy() * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(array[0], "L") if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0), "RGB")


def _to_three_channels(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor


class RadiographTransform:
    """Decode with `load_radiograph`, augment on one channel, expand to three channels at the end.

    `augment` is the torchvision/timm pipeline: it receives a (C, H, W) float tensor in [0, 1] when `pil_input` is
    false, else an 8-bit PIL image (mode "L" for grayscale), and returns a normalised (C, H, W) tensor. A class
    rather than a closure so that data-loader workers and `datasets` can pickle it.
    """

    def __init__(self, augment: Callable[[Any], torch.Tensor], *, pil_input: bool = False) -> None:
        self.augment = augment
        self.pil_input = pil_input

    def __call__(self, image: Any) -> torch.Tensor:
        if self.pil_input and isinstance(image, Image.Image) and image.mode == "L":
            # Already what the PIL pipeline wants (e.g. a decoded prepared-cache image): skip the float round trip.
            return _to_three_channels(self.augment(image))
        tensor = radiograph_tensor(image)
        return _to_three_channels(self.augment(_to_pil_8bit(tensor) if self.pil_input else tensor))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pil_input={self.pil_input}, augment={self.augment})"


def pretraining_transform(
    image_size: int = 224,
    mean: float = CXR_MEAN,
    std: float = CXR_STD,
    scale: tuple[float, float] = (0.5, 1.0),
) -> RadiographTransform:
    """The MAE pre-training augmentation: RandomResizedCrop(`image_size`, `scale`, bicubic) + horizontal flip."""
    return RadiographTransform(
        v2.Compose(
            [
                v2.RandomResizedCrop(image_size, scale=scale, interpolation=InterpolationMode.BICUBIC, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.Normalize([mean], [std]),
            ]
        )
    )


def finetuning_transform(
    image_size: int = 224,
    auto_augment: str | None = "rand-m6-mstd0.5-inc1",
    mean: float = CXR_MEAN,
    std: float = CXR_STD,
    interpolation: str = "bicubic",
    scale: tuple[float, float] | None = None,
    hflip: float = 0.5,
) -> RadiographTransform:
    """The paper's fine-tuning augmentation: timm's `create_transform` with RandomResizedCrop (timm's default scale
    0.08-1 unless `scale` is given), horizontal flip, RandAugment `auto_augment`, no colour jitter and no random
    erasing. One-element `mean`/`std` keep it single-channel, and make RandAugment fill with the gray mean."""
    return RadiographTransform(
        create_transform(
            image_size,
            is_training=True,
            scale=scale,
            hflip=hflip,
            color_jitter=None,
            auto_augment=auto_augment,
            interpolation=interpolation,
            mean=(mean,),
            std=(std,),
            re_prob=0.0,
        ),
        pil_input=True,
    )


class _CenterCrop(torch.nn.Module):
    """Center crop with the offset rounded down, as `CXRImageProcessor` (transformers) crops; torchvision's
    `CenterCrop` rounds half up, one pixel apart when the margin is odd (non-square radiographs)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        return image[..., (height - self.size) // 2 :, (width - self.size) // 2 :][..., : self.size, : self.size]

    def extra_repr(self) -> str:
        return f"size={self.size}"


def evaluation_transform(
    image_size: int = 224,
    resize: int | None = None,
    mean: float = CXR_MEAN,
    std: float = CXR_STD,
) -> RadiographTransform:
    """Resize the short side to `resize` (bicubic, antialiased), center-crop `image_size`, normalise: what
    `CXRImageProcessor.for_image_size(image_size)` does. `resize` defaults to `image_size / 0.875` (256 for 224)."""
    resize = round(image_size / 0.875) if resize is None else resize
    if resize < image_size:
        raise ValueError(f"resize ({resize}) must be at least image_size ({image_size}): the crop is taken after it")
    return RadiographTransform(
        v2.Compose(
            [
                v2.Resize(resize, interpolation=InterpolationMode.BICUBIC, antialias=True),
                _CenterCrop(image_size),
                v2.Normalize([mean], [std]),
            ]
        )
    )


def _image_source(item: Any) -> Any:
    """What `load_radiograph` reads, from an `image` cell: a PIL image (decoded `datasets.Image`), a path, or the
    `{"bytes", "path"}` dict of an undecoded `datasets.Image`."""
    if isinstance(item, Mapping):
        if item.get("bytes") is not None:
            return Image.open(io.BytesIO(item["bytes"]))
        if item.get("path") is not None:
            return item["path"]
        raise ValueError("An image cell has neither bytes nor a path.")
    return item


class BatchTransform:
    """A `datasets.Dataset.with_transform` function: a batch dict in, {"pixel_values", "labels"} torch tensors out.

    `pixel_values` is (B, 3, H, W); for grayscale images it is an `expand` view of one stored channel.

    Tensors rather than lists, because torch's default collate turns a list of per-example label lists into a list
    of tensors instead of one (B, num_labels) tensor.
    """

    def __init__(
        self, transform: Callable[[Any], torch.Tensor], label_key: str | None = "labels", image_key: str = "image"
    ) -> None:
        self.transform = transform
        self.label_key = label_key
        self.image_key = image_key

    def __call__(self, batch: Mapping[str, list]) -> dict[str, torch.Tensor]:
        images = [self.transform(_image_source(item)) for item in batch[self.image_key]]
        if images and all(image.shape[0] == 3 and image.stride(0) == 0 for image in images):
            # Stack the one stored channel and expand the batch: a third of the copying. A DataLoader's collate
            # materialises the three channels once, in shared memory; call .contiguous() before in-place edits.
            pixel_values = torch.stack([image[:1] for image in images]).expand(-1, 3, -1, -1)
        else:
            pixel_values = torch.stack(images)
        out = {"pixel_values": pixel_values}
        if self.label_key is not None:
            if self.label_key not in batch:
                raise KeyError(
                    f"The batch has no {self.label_key!r} column (columns: {', '.join(batch)}); pass label_key=None "
                    "for unlabelled corpora such as the pre-training unions."
                )
            labels = torch.tensor(batch[self.label_key])
            # Multi-hot float vectors for BCE (NaN = unknown stays NaN); class indices stay int64 for CE.
            out["labels"] = labels.float() if labels.is_floating_point() else labels
        return out


def make_batch_transform(
    transform: Callable[[Any], torch.Tensor], label_key: str | None = "labels", image_key: str = "image"
) -> BatchTransform:
    """`dataset.with_transform(make_batch_transform(finetuning_transform()))` yields model-ready batches; use
    `label_key="label"` for single-label corpora and `label_key=None` for the unlabelled pre-training unions."""
    return BatchTransform(transform, label_key=label_key, image_key=image_key)


def _is_expanded_gray(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 3 and value.shape[0] == 3 and value.stride(0) == 0


def collate_radiographs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`default_collate` that keeps grayscale `pixel_values` one channel wide until the batch is built: the batch is
    (B, 3, H, W) as an `expand` view of (B, 1, H, W). Pass it as a DataLoader's `collate_fn`: worker processes then
    hand a third of the bytes to the main process (at 2 workers this roughly doubled the images/s a DataLoader could
    move through shared memory here). Colour images are collated as they are."""
    if rows and all(_is_expanded_gray(row.get("pixel_values")) for row in rows):
        batch = default_collate([{**row, "pixel_values": row["pixel_values"][:1]} for row in rows])
        batch["pixel_values"] = batch["pixel_values"].expand(-1, 3, -1, -1)
        return batch
    return default_collate(rows)
