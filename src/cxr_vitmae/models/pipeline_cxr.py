"""The image-classification pipeline of cxr-vitmae classifiers: transformers' own, reading images with our loader.

transformers' `ImageClassificationPipeline` opens files itself and converts them to 8-bit RGB before any image
processor runs, which saturates 16-bit PNGs (values above 255 clip to white) and cannot open DICOM. This subclass
changes only that step: every input goes through `load_radiograph` (16-bit rescaled, DICOM modality/VOI LUTs,
MONOCHROME1 inverted) and then the model's `CXRImageProcessor`, exactly as `cxr-vitmae predict` reads it; scores and
`function_to_apply` (sigmoid for multi-label models) are the stock pipeline's. Two things go further than stock:
- `top_k` defaults to every label of a multi-label model (a radiograph's findings are independent: the five most
  probable would hide the rest); single-label models keep stock's 5; an explicit `top_k` wins either way;
- besides a list (answered as a list) and a generator or a torch `Dataset` such as `KeyDataset` (streamed, as stock
  does), it streams any other iterator or iterable of images and a `datasets.Dataset` / `IterableDataset` (its `image`
  column, or its one `Image` column, read from the stored file or bytes, so 16-bit PNG and DICOM keep their values),
  where stock would take the container itself for one image.

`save_pretrained` of a classifier copies this file into the model directory and names it in `config.json`'s
`custom_pipelines`, so `pipeline("image-classification", model=dir, trust_remote_code=True)` uses it where cxr_vitmae
is absent. Like the other copied files it imports only numpy, PIL, the standard library and transformers' public API.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import types
import urllib.request
from collections.abc import Iterable
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
    images, numpy arrays, torch tensors, `datasets.Image(decode=False)` dicts) are read with `load_radiograph` instead
    of an 8-bit RGB conversion. Unreadable input raises `RadiographReadError` (a `ValueError`) naming the problem.
    Iterators, iterables and `datasets` datasets stream, and a multi-label model answers with every label (module
    docstring)."""

    def __call__(self, inputs: Any = None, **kwargs: Any):
        if "images" in kwargs:  # stock's older keyword
            inputs = kwargs.pop("images")
        return super().__call__(_streamable(inputs), **kwargs)

    def postprocess(self, model_outputs, function_to_apply=None, top_k=None):
        if top_k is None:
            config = self.model.config
            top_k = config.num_labels if config.problem_type == "multi_label_classification" else 5
        return super().postprocess(model_outputs, function_to_apply=function_to_apply, top_k=top_k)

    def preprocess(self, image: Any, timeout: float | None = None):
        model_inputs = self.image_processor(
            images=processor_input(self.image_processor, _read(image, timeout)), return_tensors="pt"
        )
        return model_inputs.to(self.dtype)


def _streamable(inputs: Any) -> Any:
    """`inputs` as `Pipeline.__call__` streams it: stock streams generators and torch datasets only and takes any
    other container for a single image, so the others become generators here."""
    if _is_datasets_dataset(inputs):
        column = _image_column(inputs)
        feature = (inputs.features or {}).get(column)
        if type(feature).__name__ == "Image" and dataclasses.is_dataclass(feature):
            # The stored file or bytes go to load_radiograph, not to datasets' PIL decoding (which opens no DICOM).
            inputs = inputs.cast_column(column, dataclasses.replace(feature, decode=False))
        return (row[column] for row in inputs.select_columns([column]))
    one_image = (str, bytes, bytearray, dict, list, tuple, np.ndarray, Image.Image, types.GeneratorType)
    if isinstance(inputs, one_image) or type(inputs).__module__.split(".")[0] == "torch":
        return inputs  # what stock handles itself (tensors and torch datasets included)
    if isinstance(inputs, Iterable):
        return (item for item in inputs)
    return inputs


def _is_datasets_dataset(inputs: Any) -> bool:
    # By name and shape: this file cannot import `datasets` (model directories carry it where it may be absent).
    return type(inputs).__module__.split(".")[0] == "datasets" and hasattr(inputs, "column_names")


def _image_column(dataset: Any) -> str:
    """The column of `dataset` holding the images: `image` (transformers' and datasets' default name), else its one
    column of type `datasets.Image`."""
    columns = list(dataset.column_names or [])
    if "image" in columns:
        return "image"
    typed = [name for name, feature in (dataset.features or {}).items() if type(feature).__name__ == "Image"]
    if len(typed) == 1:
        return typed[0]
    raise ValueError(
        f"Cannot tell which column of this dataset holds the images (columns: {', '.join(columns)}): name it "
        "`image`, or pass the column itself (`dataset[name]` or KeyDataset(dataset, name))."
    )


def _read(image: Any, timeout: float | None) -> np.ndarray:
    if isinstance(image, dict) and ("bytes" in image or "path" in image):  # datasets.Image(decode=False)
        image = image.get("bytes") or image.get("path")
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
