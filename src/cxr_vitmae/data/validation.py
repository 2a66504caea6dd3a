"""Checks every corpus builder runs before it yields anything, so bad data fails at load time, never mid-epoch."""

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import datasets
from PIL import Image

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


def _readable(path: Path) -> bool:
    """PIL identifies the file from its header, and a PNG or JPEG also ends as a complete one does: a truncated copy
    (an interrupted download or extraction) opens fine and fails only when its pixels are decoded."""
    try:
        with open(path, "rb") as file, Image.open(file) as image:
            marker = _END_MARKERS.get(image.format)
            if marker is None:
                return True
            size = file.seek(0, os.SEEK_END)
            file.seek(max(size - _TAIL_BYTES, 0))
            return marker in file.read()
    except (OSError, SyntaxError, ValueError):
        return False


def check_images(paths: Iterable[Path], listed_in: str) -> None:
    """Every path exists, PIL can identify it (a header read, no pixel decoding) and a PNG or JPEG is complete (its
    end marker is there); otherwise one CorpusError with the count and the first few offending files."""
    paths = list(paths)
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise CorpusError(
            f"{len(missing)} of {len(paths)} image(s) listed in {listed_in} are missing: {first_few(missing)}"
        )
    unreadable = [path for path in paths if not _readable(path)]
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
    """The patients carved out of `patients` (the ids of one split) as a validation split: the first
    `round(fraction × n)` (at least 1, never all) ordered by SHA-256 of `"<seed>:<patient id>"`, which is the same on
    every platform and library version, and independent of row order. `fraction` 0 carves nothing."""
    patients = set(patients)
    if fraction == 0:
        return set()
    if len(patients) < 2:
        raise CorpusError(
            f"{carved_from} has {len(patients)} patient(s); carving a validation split needs at least 2 "
            "(or validation_fraction=0)"
        )
    count = min(max(round(fraction * len(patients)), 1), len(patients) - 1)
    ranked = sorted(patients, key=lambda patient: hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest())
    return set(ranked[:count])


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
