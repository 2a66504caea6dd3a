"""Chest X-ray image loading and the `CXRImageProcessor`.

This module is copied verbatim into saved model directories and loaded with
``trust_remote_code=True`` where ``cxr_vitmae`` is not installed, so it must stay
self-contained: only numpy, PIL, torch, torchvision (a hard requirement of the transformers
torchvision backend anyway) and transformers at import time; pydicom is imported lazily.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import BatchFeature, ViTImageProcessor

__all__ = ["CXRImageProcessor", "RadiographReadError", "load_radiograph"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DICOM_SUFFIXES = (".dcm", ".dicom")

# Modes PIL can turn into one we read without losing information.
_PIL_CONVERSIONS = {"PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}
_PIL_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class RadiographReadError(ValueError):
    """An input could not be read as a radiograph (missing, corrupt or unsupported)."""


def load_radiograph(source: Any) -> np.ndarray:
    """Read a radiograph into a float32 array in ``[0, 1]``.

    Args:
        source: a path (``str`` / ``os.PathLike``) to a PNG, JPEG or other PIL-readable file or to a DICOM
            file; a ``PIL.Image.Image``; or a numpy array / torch tensor shaped ``(H, W)``, ``(H, W, C)`` with
            ``C`` in 1/3/4, or ``(C, H, W)`` with ``C`` in 1/3.

    Returns:
        ``(H, W)`` for grayscale input, ``(H, W, 3)`` for colour input. 8-bit data is divided by 255 and
        16-bit data by 65535 (rescaled, never clipped); alpha channels are dropped. DICOM goes through the
        modality LUT / rescale, then the VOI LUT or window when the file defines one, is scaled by the
        theoretical output range of those steps, and MONOCHROME1 is inverted so that bright means dense.

    Raises:
        RadiographReadError: the input is missing, unreadable, or not in a supported format or range.
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source))
    if isinstance(source, Image.Image):
        return _from_pil(source, "PIL image")
    if isinstance(source, torch.Tensor):
        return _from_array(_tensor_to_numpy(source), "tensor")
    if isinstance(source, np.ndarray):
        return _from_array(source, "array")
    raise RadiographReadError(
        f"Cannot read a radiograph from an object of type {type(source).__name__}: expected a file path, "
        "a PIL.Image, a numpy array or a torch tensor."
    )


def _tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
        tensor = tensor.float()
    return tensor.numpy()


def _load_path(path: Path) -> np.ndarray:
    name = f"'{path}'"
    if not path.exists():
        raise RadiographReadError(f"Image file {name} does not exist.")
    if not path.is_file():
        raise RadiographReadError(f"Image path {name} is not a file.")
    try:
        with open(path, "rb") as f:
            header = f.read(132)
    except OSError as e:
        raise RadiographReadError(f"Cannot open image file {name}: {e}") from e

    has_dicm_magic = header[128:132] == b"DICM"
    if has_dicm_magic or path.suffix.lower() in DICOM_SUFFIXES:
        return _load_dicom(path, has_dicm_magic)
    # PIL silently reduces 16-bit colour PNGs (colour types 2, 4, 6) to 8 bits; libpng keeps all 16.
    if header.startswith(_PNG_SIGNATURE) and len(header) >= 26 and header[24] == 16 and header[25] in (2, 4, 6):
        return _load_png16_colour(path)

    try:
        with Image.open(path) as img:
            img.load()
            # Same orientation handling as transformers.image_utils.load_image.
            img = ImageOps.exif_transpose(img)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... depending on the plugin
        raise RadiographReadError(
            f"Cannot read image file {name}: {e}. Expected a readable PNG, JPEG or other PIL image, or DICOM."
        ) from e
    return _from_pil(img, f"image file {name}")


def _load_png16_colour(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # torchvision >= 0.29 deprecates its image codecs, but it is the only installed decoder that keeps
            # all 16 bits of colour PNGs.
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_png, read_file
    except ImportError as e:
        raise RadiographReadError(
            f"'{path}' is a 16-bit colour PNG, which this torchvision version cannot decode without losing "
            "precision; save it as 16-bit grayscale or as DICOM."
        ) from e

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            chw = decode_png(read_file(str(path)), mode=ImageReadMode.UNCHANGED).numpy()
    except Exception as e:
        raise RadiographReadError(f"Cannot read 16-bit PNG file '{path}': {e}") from e
    if chw.shape[0] == 2:  # gray + alpha
        return chw[0].astype(np.float32) / np.float32(65535)
    return np.ascontiguousarray(chw[:3].transpose(1, 2, 0)).astype(np.float32) / np.float32(65535)


def _from_pil(img: Image.Image, name: str) -> np.ndarray:
    try:
        mode = img.mode
        if mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif mode in _PIL_CONVERSIONS:
            img = img.convert(_PIL_CONVERSIONS[mode])
        mode = img.mode
        arr = np.asarray(img)
    except Exception as e:
        raise RadiographReadError(f"Cannot decode {name}: {e}") from e

    if mode in ("1", "L", "RGB"):
        return _from_array(arr, name)
    if mode == "LA":
        return _from_array(arr[..., 0], name)
    if mode == "RGBA":
        return _from_array(arr[..., :3], name)
    if mode in _PIL_16BIT_MODES:
        return _from_array(arr.astype(np.uint16), name)
    if mode == "I":
        # 32-bit integer mode is how many tools store 16-bit grayscale; anything beyond 16 bits has no
        # known full-scale value to rescale by.
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise RadiographReadError(
                f"{name} has mode 'I' with values in [{arr.min()}, {arr.max()}]; expected 16-bit values in 0..65535."
            )
        return _from_array(arr.astype(np.uint16), name)
    if mode == "F":
        return _from_array(arr, name)
    raise RadiographReadError(
        f"{name} has unsupported image mode {mode!r}; expected 1, L, LA, P, RGB, RGBA, I;16, I or F."
    )


def _from_array(arr: np.ndarray, name: str) -> np.ndarray:
    shape = arr.shape
    if arr.ndim == 3:
        if shape[-1] in (1, 3, 4):
            pass
        elif shape[0] in (1, 3):
            arr = arr.transpose(1, 2, 0)
        else:
            arr = None
    elif arr.ndim != 2:
        arr = None
    if arr is None or arr.size == 0:
        raise RadiographReadError(
            f"{name} has shape {tuple(shape)}; expected (H, W), (H, W, C) with C in 1/3/4, or (C, H, W) with C in 1/3."
        )
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr[..., :3]

    if arr.dtype == np.bool_:
        out = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        out = arr.astype(np.float32) / np.float32(255)
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / np.float32(65535)
    elif np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
            raise RadiographReadError(
                f"{name} is floating point with values in [{lo}, {hi}]; expected values already in [0, 1] "
                "(scale it yourself, or pass uint8 / uint16 data)."
            )
        out = arr.astype(np.float32)
    else:
        raise RadiographReadError(
            f"{name} has dtype {arr.dtype}; expected uint8 (0..255), uint16 (0..65535), bool, or float in [0, 1]."
        )
    return np.ascontiguousarray(out)


def _voi_kind(ds: Any) -> str | None:
    """Which VOI step `pydicom.pixels.apply_voi_lut` will take; mirrors its own checks."""
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        if item.get("LUTDescriptor", None) is not None and item.get("LUTData", None) is not None:
            return "lut"
    if ds.get("WindowCenter", None) is not None and ds.get("WindowWidth", None) is not None:
        return "window"
    return None


def _stored_range(ds: Any) -> tuple[float, float]:
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        return 0.0, float(2**bits - 1)
    return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)


def _dicom_output_range(ds: Any, voi: str | None) -> tuple[float, float]:
    """The values (black, white) that the modality + VOI steps can produce at most, before MONOCHROME1 inversion."""
    if voi == "lut":
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)

    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
        rescale = voi == "window"  # pydicom's apply_windowing rescales its range even after a modality LUT
    else:
        lo, hi = _stored_range(ds)
        rescale = True
    if rescale:
        slope, intercept = ds.get("RescaleSlope", None), ds.get("RescaleIntercept", None)
        if slope is not None and intercept is not None:
            lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)

    if voi == "window":
        # apply_windowing maps below-window values to `lo` even when a negative slope makes it the larger
        # number, so keep the order: below-window stays black.
        return lo, hi
    return min(lo, hi), max(lo, hi)


def _load_dicom(path: Path, has_dicm_magic: bool) -> np.ndarray:
    name = f"'{path}'"
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as e:
        raise RadiographReadError(
            f'{name} is a DICOM file, which needs pydicom: pip install "cxr-vitmae[dicom]"'
        ) from e

    try:
        ds = pydicom.dcmread(path, force=not has_dicm_magic)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise RadiographReadError(f"DICOM file {name} has {frames} frames; expected a single-frame radiograph.")
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        pixels = ds.pixel_array
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            voi = _voi_kind(ds)
            values = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
            lo, hi = _dicom_output_range(ds, voi)
        elif photometric == "RGB" or photometric.startswith("YBR"):
            values = pixels  # pydicom's pixel_array already converts YBR to RGB
            lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
        else:
            raise RadiographReadError(
                f"DICOM file {name} has unsupported PhotometricInterpretation {photometric!r}; "
                "expected MONOCHROME1, MONOCHROME2, RGB or YBR_*."
            )
    except RadiographReadError:
        raise
    except Exception as e:
        raise RadiographReadError(f"Cannot read DICOM file {name}: {e}") from e

    if values.ndim != (2 if photometric.startswith("MONO") else 3):
        raise RadiographReadError(f"DICOM file {name} has pixel data of shape {values.shape}; expected one frame.")
    if hi == lo:
        raise RadiographReadError(f"DICOM file {name} has an empty output range; check BitsStored and the LUTs.")
    scaled = (values.astype(np.float64) - lo) / (hi - lo)
    # Values can only leave the theoretical range through out-of-spec LUT data; bound them rather than fail.
    scaled = np.clip(scaled, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.ascontiguousarray(scaled, dtype=np.float32)


def _to_chw_255(image: Any, input_data_format: str | None = None) -> torch.Tensor:
    """One image of any supported kind as a float32 (C, H, W) tensor, C in {1, 3}, on the 0-255 scale."""
    if isinstance(image, torch.Tensor):
        image = _tensor_to_numpy(image)
    # transformers' ChannelDimension is a str enum, so its members compare equal to their string values.
    channels_first = input_data_format == "channels_first"
    if channels_first and isinstance(image, np.ndarray) and image.ndim == 3:
        image = image.transpose(1, 2, 0)
    arr = load_radiograph(image)
    chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    # Scaling back to 0-255 keeps `do_rescale` / `rescale_factor` meaning what they mean for any ViT processor,
    # while the float dtype keeps 16-bit precision.
    return torch.from_numpy(np.ascontiguousarray(chw) * np.float32(255))


class CXRImageProcessor(ViTImageProcessor):
    r"""Image processor for chest radiographs (ViT-MAE and DenseNet models of `cxr_vitmae`).

    Accepts file paths (PNG / JPEG / other PIL-readable files, 8- or 16-bit, and DICOM with the `dicom` extra),
    `PIL.Image`s, numpy arrays and torch tensors, or lists of them. Every image is read with
    [`load_radiograph`] (16-bit data rescaled, never clipped; DICOM modality/VOI LUTs applied; MONOCHROME1
    inverted), kept single-channel when grayscale through resize, center crop and normalisation, and
    expanded to three identical channels at the end.

    Defaults follow the paper: bicubic (antialiased) resize of the short side to 256, center crop 224x224,
    rescale by 1/255 and normalise with mean 0.5056 / std 0.252 on every channel.

    Example:

    ```python
    >>> from transformers import AutoImageProcessor
    >>> processor = AutoImageProcessor.from_pretrained("path/to/model", trust_remote_code=True)
    >>> inputs = processor(["chest.dcm", "chest.png"], return_tensors="pt")
    >>> inputs["pixel_values"].shape
    torch.Size([2, 3, 224, 224])
    ```
    """

    resample = Image.Resampling.BICUBIC
    size = {"shortest_edge": 256}
    default_to_square = False
    do_resize = True
    do_center_crop = True
    crop_size = {"height": 224, "width": 224}
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = [0.5056, 0.5056, 0.5056]
    image_std = [0.252, 0.252, 0.252]
    model_input_names = ["pixel_values"]

    @classmethod
    def for_image_size(cls, image_size: int, **kwargs: Any) -> CXRImageProcessor:
        """The paper's evaluation preprocessing scaled to `image_size`: resize the short side to
        `image_size / 0.875` (256 for 224), then center-crop `image_size`."""
        return cls(
            size={"shortest_edge": round(image_size / 0.875)},
            crop_size={"height": image_size, "width": image_size},
            **kwargs,
        )

    def process_image(
        self,
        image: Any,
        do_convert_rgb: bool | None = None,
        input_data_format: str | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """One image → float32 (C, H, W) tensor on the 0-255 scale; grayscale keeps C = 1 (see `_preprocess`)."""
        tensor = _to_chw_255(image, input_data_format)
        return tensor.to(device) if device is not None else tensor

    def _flatten_images(self, images: Any) -> list[Any]:
        # transformers' make_flat_list_of_images rejects (H, W) arrays and path strings, so flatten here.
        if isinstance(images, (list, tuple)):
            return [leaf for item in images for leaf in self._flatten_images(item)]
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            return list(images)
        return [images]

    def _prepare_image_like_inputs(
        self,
        images: Any,
        *args: Any,
        expected_ndims: int = 3,
        input_data_format: str | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> list[torch.Tensor]:
        flat = self._flatten_images(images)
        if not flat:
            raise RadiographReadError("No images were given.")
        return [self.process_image(img, input_data_format=input_data_format, device=device) for img in flat]

    def _preprocess(self, images: list[torch.Tensor], *args: Any, return_tensors: Any = None, **kwargs: Any):
        out = super()._preprocess(images, *args, return_tensors=None, **kwargs)
        # Grayscale is expanded only now so resize/crop run on one channel instead of three copies; with
        # do_normalize the 3-value mean/std already broadcast it to 3 channels, which is the same result.
        pixel_values = [img.repeat(3, 1, 1) if img.shape[0] == 1 else img for img in out["pixel_values"]]
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


CXRImageProcessor.register_for_auto_class("AutoImageProcessor")
