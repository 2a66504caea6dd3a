"""The phantom corpus written in NIH ChestX-ray14's exact on-disk format, read by the same `nih-chestxray14` builder
that reads NIH's own files: `images/PPPPPPPP_FFF.png` (8-bit grayscale), the `Data_Entry_2017.csv` header with its
two comma-containing column names, the official split lists and `BBox_List_2017.csv` (8 ChestX-ray8 classes, test
images only, `Infiltrate` spelling). Every name and header is the one the NIH builder reads (`data.nih`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ...errors import InputError
from ...models.chest_xray_labels import NIH_CHESTXRAY14_LABELS
from ..nih import (
    BBOX_COLUMNS,
    BBOX_FILE,
    BBOX_LABEL_SPELLINGS,
    DATA_ENTRY_COLUMNS,
    DATA_ENTRY_FILES,
    NO_FINDING,
    TEST_LIST,
    TRAIN_VAL_LIST,
    BoundingBox,
)
from .arguments import DIFFICULTY, checked_difficulty, checked_test_fraction, checked_variation
from .plan import TEST_FRACTION, ImagePlan, plan_corpus
from .record import write_record
from .render import render

# NIH's original label file (the builder also reads its 2020 revision, which the generator does not write).
DATA_ENTRY_FILE = DATA_ENTRY_FILES[-1]
DATA_ENTRY_HEADER = ",".join(DATA_ENTRY_COLUMNS)
# NIH's box file header ends with three empty column names.
BBOX_HEADER = ",".join(BBOX_COLUMNS) + ",,,"
# The ChestX-ray8 classes, the only ones NIH boxed.
BOX_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax")
BOX_FILE_SPELLING = {label: spelling for spelling, label in BBOX_LABEL_SPELLINGS.items()}
PNG_OPTIONS = {"format": "PNG", "compress_level": 1}


@dataclass(frozen=True)
class PhantomImage:
    """What the generator wrote for one image. `patient_id` is the 8-digit prefix of the file name (the CSV's
    `Patient ID` column holds the same number without zero padding); `labels` is the 14-long multi-hot vector in
    `NIH_CHESTXRAY14_LABELS` order; `boxes` is empty for train_val images, as in NIH."""

    file_name: str
    patient_id: str
    follow_up: int
    age: int
    gender: str
    view: str
    split: str
    labels: tuple[float, ...]
    boxes: tuple[BoundingBox, ...] = ()

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(name for name, value in zip(NIH_CHESTXRAY14_LABELS, self.labels, strict=True) if value)

    @property
    def finding_labels(self) -> str:
        """The `Finding Labels` cell: pipe-separated NIH names, or `No Finding` alone."""
        return "|".join(self.findings) or NO_FINDING


@dataclass(frozen=True)
class PhantomCorpus:
    """The corpus `generate_phantoms` wrote, image by image in file-name order."""

    output_dir: Path
    size: int
    seed: int
    difficulty: float
    images: tuple[PhantomImage, ...]
    label_names: tuple[str, ...] = NIH_CHESTXRAY14_LABELS

    @property
    def train_val_files(self) -> list[str]:
        return [image.file_name for image in self.images if image.split == "train_val"]

    @property
    def test_files(self) -> list[str]:
        return [image.file_name for image in self.images if image.split == "test"]

    def by_file_name(self) -> dict[str, PhantomImage]:
        return {image.file_name: image for image in self.images}

    def labels_array(self) -> np.ndarray:
        return np.array([image.labels for image in self.images], dtype=np.float32).reshape(-1, len(self.label_names))


def _data_entry_row(spec: ImagePlan, image: PhantomImage) -> str:
    width, height = spec.original_size
    return (
        f"{spec.file_name},{image.finding_labels},{spec.follow_up},{spec.patient},{spec.age},{spec.gender},"
        f"{spec.view},{width},{height},{spec.spacing},{spec.spacing}\n"
    )


def _box_row(file_name: str, box: BoundingBox) -> str:
    label = BOX_FILE_SPELLING.get(box.label, box.label)
    return f"{file_name},{label},{box.x!r},{box.y!r},{box.w!r},{box.h!r}\n"


def generate_phantoms(
    output_dir: str | Path,
    num_images: int,
    *,
    size: int = 1024,
    seed: int = 0,
    difficulty: str | float = DIFFICULTY,
    variation: float = 1.0,
    test_fraction: float = TEST_FRACTION,
    progress: bool = False,
) -> PhantomCorpus:
    """Write `num_images` synthetic chest radiographs and their metadata to `output_dir` in NIH ChestX-ray14's
    on-disk format, and return exactly what was written. Same arguments, byte-identical files. `variation` scales
    the spread of anatomy and acquisition between images (`render`; 1: the default phantoms); `test_fraction` is the
    share of the images whose patients `test_list.txt` holds (NIH's by default)."""
    level = checked_difficulty(num_images, size, difficulty)
    variation = checked_variation(variation)
    test_fraction = checked_test_fraction(test_fraction)
    output = Path(output_dir)
    specs = plan_corpus(int(num_images), int(seed), test_fraction=test_fraction)
    if test_fraction != TEST_FRACTION:  # NIH's share keeps today's corpora, a tiny one's single patient included
        counts = [len({s.patient for s in specs if s.split == split}) for split in ("train_val", "test")]
        if counts[0] < 2 or counts[1] < 1:
            raise InputError(
                f"test_fraction={test_fraction} leaves {counts[0]} patient(s) in train_val_list.txt and {counts[1]} in "
                f"test_list.txt of {num_images} images; the reader needs 2 and 1 (it carves validation patients from "
                "train_val): use more images or a test_fraction nearer 0.5"
            )
    # Images left by another corpus would sit in images/ without a CSV row; refuse rather than delete them.
    names = {spec.file_name for spec in specs}
    strangers = sorted(p.name for p in (output / "images").glob("*.png") if p.name not in names)
    if strangers:
        raise InputError(
            f"{output / 'images'} holds {len(strangers)} PNG file(s) that are not part of this corpus "
            f"(e.g. {', '.join(strangers[:3])}); write the phantoms to an empty directory"
        )
    (output / "images").mkdir(parents=True, exist_ok=True)

    iterator = tqdm(specs, desc="phantoms", unit="img") if progress else specs
    images = []
    for spec in iterator:
        pixels, drawn = render(spec, int(size), level, int(seed), variation=variation)
        Image.fromarray(pixels).save(output / "images" / spec.file_name, **PNG_OPTIONS)
        # NIH boxed test images only, and only the ChestX-ray8 classes.
        boxes = tuple(box for box in drawn if box.label in BOX_LABELS) if spec.split == "test" else ()
        images.append(PhantomImage(spec.file_name, f"{spec.patient:08d}", spec.follow_up, spec.age, spec.gender,
                                   spec.view, spec.split, spec.labels, boxes))  # fmt: skip

    with open(output / DATA_ENTRY_FILE, "w", newline="", encoding="utf-8") as handle:
        handle.write(DATA_ENTRY_HEADER + "\n")
        handle.writelines(_data_entry_row(spec, image) for spec, image in zip(specs, images, strict=True))
    for name, split in ((TRAIN_VAL_LIST, "train_val"), (TEST_LIST, "test")):
        with open(output / name, "w", newline="", encoding="utf-8") as handle:
            handle.writelines(f"{image.file_name}\n" for image in images if image.split == split)
    with open(output / BBOX_FILE, "w", newline="", encoding="utf-8") as handle:
        handle.write(BBOX_HEADER + "\n")
        handle.writelines(_box_row(image.file_name, box) for image in images for box in image.boxes)
    write_record(output, "nih", len(images), int(size), int(seed), level, variation, test_fraction)
    return PhantomCorpus(output_dir=output, size=int(size), seed=int(seed), difficulty=level, images=tuple(images))
