"""Checks every corpus builder runs before it yields anything, so bad data fails at load time, never mid-epoch."""

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import datasets
from PIL import Image

from ..models.image_processing_cxr import DICOM_SUFFIXES
from .errors import CorpusError

SHOWN = 5  # how many offending names an error message lists


def first_few(names: Iterable) -> str:
    """The first few of `names` for an error message, with an ellipsis when there are more."""
    names = list(names)
    return ", ".join(str(name) for name in names[:SHOWN]) + (", …" if len(names) > SHOWN else "")


# What a complete file ends with, searched for in its last bytes (decoders ignore a little trailing padding): the
# PNG IEND chunk, and the JPEG end-of-image marker (0xFF is never followed by 0xD9 inside JPEG scan data).
_END_MARKERS = {"PNG": b"IEND\xaeB`\x82", "JPEG": b"\xff\xd9"}
_TAIL_BYTES = 1024
# A DICOM file has a 128-byte preamble, then "DICM"; files without them are read by suffix.
_DICOM_MAGIC_END = 132


def image_problem(path: Path) -> str | None:
    """Why `path` would fail to decode, or None, found without decoding (except compressed DICOM): PIL identifies
    the file from its header and a PNG or JPEG ends as a complete one does (a truncated copy, an interrupted
    download or extraction, opens fine and fails only when its pixels are decoded); a DICOM file holds as many
    pixel bytes as its header promises."""
    try:
        with open(path, "rb") as file:
            header = file.read(_DICOM_MAGIC_END)
            if header[_DICOM_MAGIC_END - 4 :] == b"DICM" or path.suffix.lower() in DICOM_SUFFIXES:
                return _dicom_problem(path, forced=header[_DICOM_MAGIC_END - 4 :] != b"DICM")
            file.seek(0)
            with Image.open(file) as image:
                marker = _END_MARKERS.get(image.format)
                if marker is None:
                    return None
                size = file.seek(0, os.SEEK_END)
                file.seek(max(size - _TAIL_BYTES, 0))
                return None if marker in file.read() else f"truncated: no {image.format} end marker"
    except (OSError, SyntaxError, ValueError) as error:
        return f"not a readable PNG, JPEG or DICOM file ({error})"


def _dicom_problem(path: Path, forced: bool) -> str | None:
    try:
        import pydicom
    except ImportError:
        return 'a DICOM file, which needs pydicom: pip install "cxr-vitmae[dicom]"'
    try:
        dataset = pydicom.dcmread(path, force=forced)
        if "PixelData" not in dataset:
            return "a DICOM file without pixel data"
        if dataset.file_meta.TransferSyntaxUID.is_compressed:
            # No cheaper way to know that a compressed stream is whole, or that a decoder for it is installed.
            return None if dataset.pixel_array.size else "a DICOM file with empty pixel data"
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        expected = dataset.Rows * dataset.Columns * dataset.SamplesPerPixel * dataset.BitsAllocated // 8 * frames
        found = len(dataset.PixelData)
        return None if found >= expected else f"truncated DICOM: {found} of {expected} pixel bytes"
    except Exception as error:  # pydicom raises many kinds for a damaged file
        return f"not a readable DICOM file ({error})"


def check_images(paths: Iterable[Path], listed_in: str) -> None:
    """Every path exists, PIL can identify it (a header read, no pixel decoding) and a PNG or JPEG is complete (its
    end marker is there); otherwise one CorpusError with the count and the first few offending files."""
    paths = list(paths)
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise CorpusError(
            f"{len(missing)} of {len(paths)} image(s) listed in {listed_in} are missing: {first_few(missing)}"
        )
    unreadable = [path for path in paths if image_problem(path) is not None]
    if unreadable:
        raise CorpusError(
            f"{len(unreadable)} image(s) listed in {listed_in} cannot be read as images or are truncated: "
            f"{first_few(unreadable)}"
        )


def check_fraction(corpus: str, fraction, seed) -> None:
    """The `validation_fraction` / `validation_seed` options of a corpus whose validation split is carved."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise CorpusError(f"{corpus} option validation_fraction={fraction!r}: expected a number in [0, 1)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CorpusError(f"{corpus} option validation_seed={seed!r}: expected an int")


def carve_validation_patients(patients: Iterable[str], fraction: float, seed: int, carved_from: str) -> set[str]:
    """The patients carved out of `patients` (the ids of one split) as a validation split (`carve_patients`)."""
    return set(carve_patients(patients, {"validation": fraction}, seed, carved_from))


def carve_patients(patients: Iterable[str], fractions: dict[str, float], seed: int, carved_from: str) -> dict[str, str]:
    """Patient -> split for the patients carved out of `patients` (the rest stay where they are): the patients
    ordered by SHA-256 of `"<seed>:<patient id>"`, which is the same on every platform and library version and
    independent of row order, are dealt out in `fractions`' order, `round(fraction × n)` each (at least 1 for a
    fraction above 0), leaving at least one patient uncarved. Fractions of 0 carve nothing."""
    patients = set(patients)
    wanted = {split: fraction for split, fraction in fractions.items() if fraction > 0}
    if not wanted:
        return {}
    if len(patients) < len(wanted) + 1:
        raise CorpusError(
            f"{carved_from} has {len(patients)} patient(s); carving {' and '.join(wanted)} from them needs at least "
            f"{len(wanted) + 1} (or a fraction of 0)"
        )
    ranked = sorted(patients, key=lambda patient: hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest())
    carved, start = {}, 0
    for position, (split, fraction) in enumerate(wanted.items()):
        left_for_later = len(wanted) - position - 1
        count = min(max(round(fraction * len(patients)), 1), len(patients) - start - 1 - left_for_later)
        carved.update(dict.fromkeys(ranked[start : start + count], split))
        start += count
    return carved


def check_patients_disjoint(patients: dict[str, set[str]], where: str) -> None:
    """No patient in two splits (`patients`: split -> its patient ids)."""
    order = list(patients)
    for i, first in enumerate(order):
        for second in order[i + 1 :]:
            shared = sorted(patients[first] & patients[second])
            if shared:
                raise CorpusError(
                    f"{where}: {len(shared)} patient(s) have images in both the {first} and the {second} split "
                    f"(patient leakage): {first_few(shared)}"
                )


def check_cached_images(splits: datasets.DatasetDict, where: str) -> None:
    """Every image file a cached build refers to still exists. `datasets` stores an image given by path as that path
    and reuses a cache without running the builder again (its key covers the options and the metadata files, not
    the images), so images moved or deleted since the build must be caught here, not mid-epoch."""
    for split, dataset in splits.items():
        if not isinstance(dataset.features.get("image"), datasets.Image):
            continue
        column = dataset.data.column("image")
        paths = [path for chunk in column.chunks for path in chunk.field("path").to_pylist()]
        stored = [path for chunk in column.chunks for path in chunk.field("bytes").is_null().to_pylist()]
        missing = [path for path, by_path in zip(paths, stored, strict=True) if by_path and not os.path.isfile(path)]
        if missing:
            raise CorpusError(
                f"{len(missing)} of {len(paths)} image(s) of the cached {split} split of {where} are missing (moved "
                f"or deleted since the cache was built): {first_few(missing)}"
            )
