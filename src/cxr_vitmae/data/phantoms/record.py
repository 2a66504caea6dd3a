"""The record file that marks a directory as written by the phantom generator: writing it, and reading it back so
that results on phantoms are labelled as such in `training_args.json`, `metrics.json` and model cards."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import InputError
from .plan import TEST_FRACTION

# NIH's own files stay exactly NIH's: what the generator adds goes into this one file.
PHANTOM_RECORD = "cxr_vitmae_phantoms.json"
PHANTOM_GENERATOR = "cxr-vitmae phantoms"


def write_record(
    output: Path,
    layout: str,
    num_images: int,
    size: int,
    seed: int,
    difficulty: float,
    variation: float = 1.0,
    test_fraction: float = TEST_FRACTION,
) -> None:
    """Record the generator's arguments in `output`. The NIH layout's record names no layout: readers take a record
    without one as NIH's (`phantom_record(...).get("layout", "nih")`); likewise a record without `variation` or
    `test_fraction` has the default's (1; NIH's share), so the default corpus's record stays as it was."""
    record = {"generator": PHANTOM_GENERATOR, **({} if layout == "nih" else {"layout": layout}),
              "num_images": num_images, "size": size, "seed": seed, "difficulty": difficulty,
              **({} if variation == 1.0 else {"variation": variation}),
              **({} if test_fraction == TEST_FRACTION else {"test_fraction": test_fraction})}  # fmt: skip
    (output / PHANTOM_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def phantom_record(data_dir: str | Path | None) -> dict | None:
    """What `generate_phantoms` or `write_phantom_layout` recorded about the corpus in `data_dir` (generator, layout
    but for NIH's, image count, size, seed, difficulty), also found in a `cxr-vitmae prepare` copy of it; `None` for
    any other directory (or none). Recipes and `cxr-vitmae evaluate` copy it into `training_args.json` and
    `metrics.json`, so that a model card never presents results on phantoms as results on the corpus whose format they
    borrow."""
    if data_dir is None or not (Path(data_dir) / PHANTOM_RECORD).is_file():
        return None
    path = Path(data_dir) / PHANTOM_RECORD
    try:
        record = json.loads(path.read_text())
    except ValueError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(record, dict) or record.get("generator") != PHANTOM_GENERATOR:
        raise InputError(f"{path}: expected the record `cxr-vitmae phantoms` writes, got {record!r}")
    return record
