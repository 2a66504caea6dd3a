"""DICOM files as PIL images, so that `datasets.Image` columns of DICOM paths decode wherever a corpus is read.

`datasets.Image` decodes with `PIL.Image.open`, which knows no DICOM: `dataset[i]["image"]` on a corpus of DICOM
files (a PACS export in a `csv` or `folder` corpus) would raise. Registering an opener with PIL makes every reader of
the corpus (the recipes' loaders, `dataset[i]`, `prepare`, user code) get the radiograph as `load_radiograph` reads
it: modality and VOI LUTs applied, MONOCHROME1 inverted, scaled to [0, 1], as a 32-bit float ("F") image, which
`load_radiograph` reads back exactly. Colour DICOMs (rare for radiographs) become 8-bit RGB.

The opener is tried after PIL's own formats have declined a file, and declines (SyntaxError, PIL's signal for "not
mine") anything that neither carries the DICOM magic bytes nor is a file with a DICOM suffix. Embedded bytes (a
Hugging Face dataset's image cells) are read too.
"""

import os
import tempfile

import numpy as np
from PIL import Image

from ..models.image_processing_cxr import DICOM_SUFFIXES, load_radiograph

FORMAT = "CXR_DICOM"
# The 128-byte preamble, then "DICM".
_MAGIC_OFFSET, _MAGIC = 128, b"DICM"


def _open(fp, filename) -> Image.Image:
    name = os.fsdecode(filename) if filename else ""
    header = fp.read(_MAGIC_OFFSET + len(_MAGIC))
    on_disk = os.path.isfile(name)
    if header[_MAGIC_OFFSET:] != _MAGIC and not (on_disk and os.path.splitext(name)[1].lower() in DICOM_SUFFIXES):
        raise SyntaxError("not a DICOM file")
    if on_disk:
        array = load_radiograph(name)
    else:
        # Bytes embedded in a dataset (`hf` corpora): `load_radiograph` reads DICOM from files, so through one.
        fp.seek(0)
        with tempfile.NamedTemporaryFile(suffix=".dcm") as copy:
            copy.write(fp.read())
            copy.flush()
            array = load_radiograph(copy.name)
    if array.ndim == 2:
        return Image.fromarray(array, "F")
    return Image.fromarray(np.round(array * 255).astype(np.uint8), "RGB")


def register_dicom_with_pil() -> None:
    """Make `PIL.Image.open` (and so `datasets.Image`) read DICOM files (module docstring). Idempotent."""
    Image.init()  # PIL's own formats first: the opener is only asked about files they all decline
    Image.register_open(FORMAT, _open)


__all__ = ["register_dicom_with_pil"]
