"""DICOM image cells: `datasets.Image` decodes with PIL, which knows no DICOM, so corpora of DICOM files (a PACS export
in a `csv` or `folder` corpus, DICOM bytes in an `hf` dataset) are decoded here, by `load_radiograph` (modality and VOI
LUTs, MONOCHROME1 inverted, scaled to [0, 1]), wherever the package reads a corpus (`training.data.TransformedCorpus`,
which the recipes and `evaluate` use; `prepare` reads every cell through `load_radiograph` already).

For code of one's own, `register_dicom_with_pil()` makes `PIL.Image.open`, and so `dataset[i]["image"]`, read DICOM
files as 32-bit float ("F") images. It is opt-in: once registered, every PIL reader in the process gets such images,
and transformers' stock image pipelines would turn them into black 8-bit RGB instead of refusing the file.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..models.image_processing_cxr import DICOM_SUFFIXES, load_radiograph

# The 128-byte preamble, then "DICM".
_MAGIC_OFFSET, _MAGIC = 128, b"DICM"
# File names PIL decodes as `load_radiograph` would; any other file is checked for the DICOM magic.
_PIL_SUFFIXES = (".png", ".jpg", ".jpeg")


def _is_dicom_file(path: str) -> bool:
    suffix = os.path.splitext(path)[1].lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in _PIL_SUFFIXES or not os.path.isfile(path):
        return False
    with open(path, "rb") as file:
        return file.read(_MAGIC_OFFSET + len(_MAGIC))[_MAGIC_OFFSET:] == _MAGIC


def _from_bytes(data: bytes) -> np.ndarray:
    # `load_radiograph` reads DICOM from files, so through one.
    with tempfile.NamedTemporaryFile(suffix=".dcm") as copy:
        copy.write(data)
        copy.flush()
        return load_radiograph(copy.name)


def decoded_dicom_cell(cell: dict) -> np.ndarray | None:
    """The radiograph of an undecoded `datasets.Image` cell (`{"bytes", "path"}`) when it holds DICOM, else None."""
    data = cell.get("bytes")
    if data is not None:
        return _from_bytes(data) if data[_MAGIC_OFFSET : _MAGIC_OFFSET + len(_MAGIC)] == _MAGIC else None
    path = cell.get("path")
    return load_radiograph(path) if path is not None and _is_dicom_file(path) else None


def _open(fp, filename) -> Image.Image:
    name = os.fsdecode(filename) if filename else ""
    header = fp.read(_MAGIC_OFFSET + len(_MAGIC))
    on_disk = os.path.isfile(name)
    if header[_MAGIC_OFFSET:] != _MAGIC and not (on_disk and Path(name).suffix.lower() in DICOM_SUFFIXES):
        raise SyntaxError("not a DICOM file")  # PIL's signal for "not this format"
    fp.seek(0)
    array = load_radiograph(name) if on_disk else _from_bytes(fp.read())
    if array.ndim == 2:
        return Image.fromarray(array, "F")
    return Image.fromarray(np.round(array * 255).astype(np.uint8), "RGB")


def register_dicom_with_pil() -> None:
    """Opt in to `PIL.Image.open` (and so `datasets.Image`) reading DICOM files and bytes (module docstring)."""
    Image.init()  # PIL's own formats first: the opener is only asked about files they all decline
    Image.register_open("CXR_DICOM", _open)


__all__ = ["decoded_dicom_cell", "register_dicom_with_pil"]
