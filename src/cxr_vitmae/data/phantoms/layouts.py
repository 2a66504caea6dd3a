"""The phantom corpus (`phantoms`) written in the exact on-disk layouts of CheXpert, MIMIC-CXR-JPG and COVIDx, so that
every corpus builder can be read, trained and evaluated end to end without the real data. `write_phantom_layout(OUT,
n, layout=...)` writes one of them; `load_cxr_dataset(<corpus>, OUT)` reads it (OUT itself, for every layout).

Same generator as NIH's phantoms: `plan.plan_corpus` draws patients, follow-ups, findings (NIH names), views and the
NIH train_val/test split from the seed, `render.render` draws each image; same arguments, byte-identical files. What
each layout's files say is computed in `layout_files`; this module checks, renders and writes.

- `chexpert` (v1.0-small): `CheXpert-v1.0-small/{train,valid}.csv` (the 19 columns, `Path` with the prefix) and
  `{train,valid}/patientNNNNN/studyN/view1_frontal.jpg` (and `view2_lateral.jpg`); one plan image is one study. The
  plan's test patients are valid.csv's, numbered after train.csv's (as CheXpert's patient64541+). The NIH findings
  become CheXpert's observations through `CHEXPERT_OBSERVATIONS`. train.csv writes them as the CheXpert labeler
  does, cell by cell (`layout_files._LABELER_CELLS`): a finding drawn is 1.0 or, sometimes, -1.0 (uncertain); one
  not drawn is mostly blank, sometimes 0.0 (negated) or -1.0. For the 5 competition tasks the shares of 1.0, 0.0,
  -1.0 and blank land within 1.5 points of CheXpert train's, so the readers' uncertainty and blank policies change
  the labels as they would there. valid.csv is 0/1 in every column (radiologist consensus). No Finding is 1 only
  when no observation but Support Devices is 1 or -1, the labeler's rule; nothing draws support devices or
  fractures.
- `mimic-cxr` (MIMIC-CXR-JPG 2.0.0): `files/pNN/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg`, the metadata, split, chexpert
  and negbio files (gzipped CSVs) and `IMAGE_FILENAMES`. Subject ids are 8 digits from 1, study ids 8 digits from 5,
  dicom ids MIMIC's five dash-separated groups of 8 hex digits; dates are shifted into the 22nd century, in order
  within a patient. Labels are per study, drawn like train.csv's (the two labelers read the same findings, their
  uncertain and blank cells are drawn apart). The plan's test patients are `test`, a fixed 10 % of the others
  `validate` (MIMIC's own is under 1 %, too few patients for a small corpus). The images are histogram-equalised, as
  MIMIC-CXR-JPG's were. No 2.1.0 radiologist test file: the default `test_labels="auto"` reads the labeler's.
- `covidx`: the header-less `patient_id filename class data_source` files of 9A (`train_COVIDx9A.txt`,
  `test_COVIDx9A.txt`), 9B (`train_COVIDx9B.txt`, `test_COVIDx9B.txt`) and CXR-4 (`train.txt`, `val.txt`,
  `test.txt`), each image once in `train/`, `val/` or `test/`. A patient's class is drawn with 9A's training
  proportions (one diagnosis per patient, as in COVIDx) and each of its images is drawn for it
  (`layout_files._COVIDX_FINDINGS`): normal with no finding, pneumonia with one focal opacity, COVID-19 with patchy
  airspace opacities over the bilateral peripheral basal pattern of `Fibrosis`, the distribution typical of COVID-19
  pneumonia. 9B and CXR-4 say positive for COVID-19, negative otherwise. The plan's test patients are `test`; a
  fixed 10 % of the others are CXR-4's `val` and so in no 9A/9B list. Sources and names imitate COVIDx's
  (`layout_files._COVIDX_SOURCES`); patient ids are unique within a source.

Lateral views: the renderer draws frontal films only. A study gets a second, lateral image with
`layout_files._LATERAL_CHANCE` (PA studies usually, portable AP ones rarely), and that image is a stand-in, not a
lateral radiograph: the frontal film averaged with its mirror image, both hemithoraces superimposed as a lateral
projection superimposes them. It carries the study's labels; the readers' default views (frontal) leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from ...errors import InputError
from ..chexpert import TRAIN_CSV, VALID_CSV
from ..covidx import IMAGE_FOLDERS, VERSIONS
from ..mimic import SPLIT_FILE, SPLIT_NAMES
from ..nih import TEST_LIST, TRAIN_VAL_LIST
from .arguments import DIFFICULTY, checked_difficulty, checked_test_fraction, checked_variation
from .layout_files import CHEXPERT_ROOT, LayoutImage, plan_layout
from .nih_layout import PNG_OPTIONS, generate_phantoms
from .plan import TEST_FRACTION
from .record import PHANTOM_RECORD, phantom_record, write_record
from .render import render

# layout -> the `load_cxr_dataset` corpus that reads it.
LAYOUT_CORPORA = {"nih": "nih-chestxray14", "chexpert": "chexpert", "mimic-cxr": "mimic-cxr", "covidx": "covidx"}
LAYOUTS = tuple(LAYOUT_CORPORA)
# layout -> split (as its files name it) -> the files that list that split's images.
SPLIT_FILES = {
    "nih": {"train_val": (TRAIN_VAL_LIST,), "test": (TEST_LIST,)},
    "chexpert": {"train": (f"{CHEXPERT_ROOT}/{TRAIN_CSV}",), "valid": (f"{CHEXPERT_ROOT}/{VALID_CSV}",)},
    "mimic-cxr": dict.fromkeys(SPLIT_NAMES, (SPLIT_FILE,)),
    "covidx": {
        IMAGE_FOLDERS[split]: tuple(files[split] for files, _ in VERSIONS.values() if split in files)
        for split in IMAGE_FOLDERS
    },
}

_JPEG_OPTIONS = {"format": "JPEG", "quality": 95}


@dataclass(frozen=True)
class LayoutSplit:
    """One split of a written layout: its image and patient counts and the files that list it."""

    name: str
    images: int
    patients: int
    listed_in: tuple[str, ...]


@dataclass(frozen=True)
class PhantomLayout:
    """What `write_phantom_layout` wrote: the layout, its arguments and every image file."""

    layout: str
    output_dir: Path
    size: int
    seed: int
    difficulty: float
    images: tuple[LayoutImage, ...]

    @property
    def splits(self) -> tuple[LayoutSplit, ...]:
        """Per split, in the layout's order: images, patients and the files listing them."""
        return tuple(
            LayoutSplit(
                name,
                sum(image.split == name for image in self.images),
                len({image.patient_id for image in self.images if image.split == name}),
                files,
            )
            for name, files in SPLIT_FILES[self.layout].items()
        )


def _lateral(pixels: np.ndarray) -> np.ndarray:
    """The lateral stand-in: the frontal film averaged with its mirror image (see the module docstring)."""
    return ((pixels.astype(np.uint16) + pixels[:, ::-1] + 1) // 2).astype(np.uint8)


def _check(planned: PhantomLayout, num_images: int, test_fraction: float) -> None:
    """Refuse a corpus too small to fill every split (train needs two patients: readers carve validation patients
    from it) and a directory holding image files of another corpus (refused, never deleted)."""
    shares, remedy = (
        ("", "use more images")
        if test_fraction == TEST_FRACTION
        else (f" at test_fraction={test_fraction}", "use more images or a test_fraction nearer 0.5")
    )
    for split in planned.splits:
        needed = 2 if split.name == "train" else 1
        if split.patients < needed:
            raise InputError(
                f"num_images={num_images} is too few for the {planned.layout} layout{shares}: its {split.name} split "
                f"would hold {split.patients} patient(s), it needs {needed}; {remedy}"
            )
    output = planned.output_dir
    ours = {image.path for image in planned.images}
    roots = {Path(path).parts[0] for path in ours}
    strangers = sorted(
        str(path.relative_to(output))
        for root in roots
        for path in (output / root).rglob("*")
        if path.suffix in (".jpg", ".png") and path.relative_to(output).as_posix() not in ours
    )
    if strangers:
        raise InputError(
            f"{output} holds {len(strangers)} image(s) that are not part of this corpus (e.g. "
            f"{', '.join(strangers[:3])}); write the phantoms to an empty directory"
        )


def _nih(
    output: Path, num_images: int, size: int, seed: int, difficulty, variation, test_fraction, progress
) -> PhantomLayout:
    corpus = generate_phantoms(output, num_images, size=size, seed=seed, difficulty=difficulty, variation=variation,
                               test_fraction=test_fraction, progress=progress)  # fmt: skip
    images = tuple(
        LayoutImage(f"images/{image.file_name}", image.split, image.patient_id, image.view, image.findings, index)
        for index, image in enumerate(corpus.images)
    )
    return PhantomLayout("nih", corpus.output_dir, corpus.size, corpus.seed, corpus.difficulty, images)


def write_phantom_layout(
    output_dir: str | Path,
    num_images: int,
    *,
    layout: str,
    size: int = 1024,
    seed: int = 0,
    difficulty: str | float = DIFFICULTY,
    variation: float = 1.0,
    test_fraction: float = TEST_FRACTION,
    progress: bool = False,
) -> PhantomLayout:
    """Write `num_images` phantom studies to `output_dir` in the on-disk layout `layout` (one of `LAYOUTS`; the
    module docstring says what each holds) and return what was written. `"nih"` is `generate_phantoms`, file for
    file. Same arguments, byte-identical files; `load_cxr_dataset(LAYOUT_CORPORA[layout], output_dir)` reads them.

    Raises:
        ValueError: an unknown layout, an argument out of range, too few images to fill the layout's splits, or a
            directory that already holds another corpus.
    """
    if layout not in LAYOUTS:
        raise InputError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    level = checked_difficulty(num_images, size, difficulty)
    variation = checked_variation(variation)
    test_fraction = checked_test_fraction(test_fraction)
    output, num_images, size, seed = Path(output_dir), int(num_images), int(size), int(seed)
    existing = phantom_record(output)
    if existing is not None and existing.get("layout", "nih") != layout:
        raise InputError(
            f"{output} holds {existing.get('layout', 'nih')} phantoms ({PHANTOM_RECORD}); write the {layout} layout "
            "to an empty directory"
        )
    if layout == "nih":
        return _nih(output, num_images, size, seed, level, variation, test_fraction, progress)

    entries, files = plan_layout(layout, num_images, seed, size, test_fraction)
    planned = PhantomLayout(layout, output, size, seed, level, tuple(entry.image for entry in entries))
    _check(planned, num_images, test_fraction)

    rendered: tuple[int, np.ndarray] | None = None
    for entry in tqdm(entries, desc=f"{layout} phantoms", unit="img") if progress else entries:
        # a study's lateral follows its frontal image: each plan entry is rendered once
        if rendered is None or rendered[0] != entry.image.plan_index:
            rendered = (entry.image.plan_index, render(entry.spec, size, level, seed, variation=variation)[0])
        pixels = _lateral(rendered[1]) if entry.image.view == "LATERAL" else rendered[1]
        image = Image.fromarray(pixels)
        if layout == "mimic-cxr":  # as MIMIC-CXR-JPG's images were made
            image = ImageOps.equalize(image)
        path = output / entry.image.path
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **(_JPEG_OPTIONS if path.suffix == ".jpg" else PNG_OPTIONS))
    for name, content in files.items():
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    write_record(output, layout, num_images, size, seed, level, variation, test_fraction)
    return planned
