"""The image-classification pipeline of cxr-vitmae classifiers: transformers' own, reading images with our loader.

transformers' `ImageClassificationPipeline` opens files itself and converts them to 8-bit RGB before any image
processor runs, which saturates 16-bit PNGs (values above 255 clip to white) and cannot open DICOM. This subclass
changes only that step: every input goes through `load_radiograph` (16-bit rescaled, DICOM modality/VOI LUTs,
MONOCHROME1 inverted) and then the model's `CXRImageProcessor`, exactly as `cxr-vitmae predict` reads it; scores,
`function_to_apply` (sigmoid for multi-label models) and `top_k` are the stock pipeline's.

`save_pretrained` of a classifier copies this file into the model directory and names it in `config.json`'s
`custom_pipelines`, so `pipeline("image-classification", model=dir, trust_remote_code=True)` uses it where cxr_vitmae
is absent. Like the other copied files it imports only numpy, PIL, the standard library and transformers' public API.
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from typing import Any

import numpy as np
from PIL import Image
from transformers import AutoModelForImageClassification, ImageClassificationPipeline

from .image_processing_cxr import load_radiograph

__all__ = ["PIPELINE_TASK", "CXRImageClassificationPipeline", "custom_pipelines_entry", "processor_input"]

PIPELINE_TASK = "image-classification"


def processor_input(processor: Any, radiograph: np.ndarray) -> np.ndarray | Image.Image:
    """`radiograph` (from `load_radiograph`) as `processor` takes it: ours reads the float array as it is (16-bit
    precision kept); a stock one, as in a native export, expects 8-bit RGB, so it gets the image rescaled (never
    clipped) to 8 bits."""
    # By name: the processor may come from the package or from a model directory's copy of this code.
    if any(cls.__name__ == "CXRImageProcessor" for cls in type(processor).__mro__):
        return radiograph
    return Image.fromarray(np.round(radiograph * 255).astype(np.uint8)).convert("RGB")


class CXRImageClassificationPipeline(ImageClassificationPipeline):
    """`ImageClassificationPipeline` whose inputs (file paths of 8/16-bit PNG, JPEG and DICOM, http(s) URLs, PIL
    images, numpy arrays, torch tensors) are read with `load_radiograph` instead of an 8-bit RGB conversion.
    Unreadable input raises `RadiographReadError` (a `ValueError`) naming the problem."""

    def preprocess(self, image: Any, timeout: float | None = None):
        model_inputs = self.image_processor(
            images=processor_input(self.image_processor, _read(image, timeout)), return_tensors="pt"
        )
        return model_inputs.to(self.dtype)


def _read(image: Any, timeout: float | None) -> np.ndarray:
    if isinstance(image, str) and image.startswith(("http://", "https://")):
        with urllib.request.urlopen(image, timeout=timeout) as response:
            image = response.read()
    if isinstance(image, (bytes, bytearray)):
        # load_radiograph reads files (DICOM by its magic bytes), so the downloaded bytes go through one.
        handle, path = tempfile.mkstemp(prefix="cxr-pipeline-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(image)
            return load_radiograph(path)
        finally:
            os.unlink(path)
    return load_radiograph(image)


def custom_pipelines_entry() -> dict[str, dict[str, Any]]:
    """What `config.json`'s `custom_pipelines` holds for a classifier directory (the format `Pipeline.save_pretrained`
    writes: the class as "module.Class" of the copied file, the model Auto classes by name)."""
    module = CXRImageClassificationPipeline.__module__.rsplit(".", 1)[-1]
    return {
        PIPELINE_TASK: {
            "impl": f"{module}.{CXRImageClassificationPipeline.__name__}",
            "pt": [AutoModelForImageClassification.__name__],
            "type": "image",
        }
    }
