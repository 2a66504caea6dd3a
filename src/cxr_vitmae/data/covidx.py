"""COVIDx CXR (COVID-Net; Kaggle `andyczhao/covidx-cxr2`) read exactly as distributed.

Every version ships header-less, space-separated label files with 4 fields per line,
`patient_id filename class data_source`, and the images in `train/`, `test/` and (CXR-4) `val/` under `data_dir`:

    version  label files                                   classes
    9A       train_COVIDx9A.txt, test_COVIDx9A.txt         normal / pneumonia / COVID-19   (the paper's task)
    9B       train_COVIDx9B.txt, test_COVIDx9B.txt         negative / positive
             (Kaggle's "COVIDx CXR-2", version 5: train.txt, test.txt)
    CXR-4    train.txt, val.txt, test.txt                  negative / positive   (Kaggle version 9)

Kaggle's version 5 and version 9 both name their files train.txt and test.txt; only version 9 (CXR-4) has val.txt,
which is how a 9B request tells them apart.

Only CXR-4 distributes a validation list. For 9A and 9B, whose test files are the evaluation sets papers report
(the paper's COVIDx numbers are on test_COVIDx9A.txt), `validation` is carved from the train file by patient, as
NIH's is from train_val_list.txt: `validation_fraction` of its patients, a patient being (data source, patient id)
since several sources number their patients 1, 2, ..., ranked by SHA-256 of `"<validation_seed>:<source>/<id>"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

from ..models.chest_xray_labels import COVIDX_LABELS
from .builder import CorpusConfig, RecordCorpusBuilder
from .errors import CorpusError
from .schema import ImageRecord, classification_features
from .validation import carve_validation_patients, check_fraction, check_images

BINARY_LABELS = ("negative", "positive")

# version -> (label file per split, class names in `label` index order). The class strings are matched exactly:
# every COVIDx release spells them this way (lower-case normal / pneumonia / positive / negative, "COVID-19").
VERSIONS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "9A": ({"train": "train_COVIDx9A.txt", "test": "test_COVIDx9A.txt"}, COVIDX_LABELS),
    "9B": ({"train": "train_COVIDx9B.txt", "test": "test_COVIDx9B.txt"}, BINARY_LABELS),
    "CXR-4": ({"train": "train.txt", "validation": "val.txt", "test": "test.txt"}, BINARY_LABELS),
}
# 9B as Kaggle's "COVIDx CXR-2" (dataset version 5) names its label files.
KAGGLE_9B_FILES = {"train": "train.txt", "test": "test.txt"}
# How users and papers write the versions -> our key.
_VERSION_ALIASES = {"9A": "9A", "V9A": "9A", "9B": "9B", "V9B": "9B", "CXR-4": "CXR-4", "CXR4": "CXR-4"}
IMAGE_FOLDERS = {"train": "train", "validation": "val", "test": "test"}
_FIELDS = ("patient_id", "filename", "class", "data_source")


@dataclass
class COVIDxConfig(CorpusConfig):
    """Options of `covidx`.

    Attributes:
        covidx_version: "9A" (default: the paper's 3-class task, as in its code), "9B" or "CXR-4" (binary);
            "V9A", "V9B" and "CXR4" are accepted spellings. Named `covidx_version` because `version` is the
            builder's own cache version in `datasets`.
        validation_fraction: share of the train file's patients carved out as `validation` for 9A and 9B (0.1, as
            NIH's; 0 carves none). Not used by CXR-4, which distributes val.txt.
        validation_seed: seed of that carve (fixed, so that every run gets the same validation patients).
    """

    covidx_version: str = "9A"
    validation_fraction: float = 0.1
    validation_seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        key = str(self.covidx_version).strip().upper()
        if key not in _VERSION_ALIASES:
            raise CorpusError(
                f"covidx option covidx_version={self.covidx_version!r}: expected one of {', '.join(VERSIONS)}"
            )
        self.covidx_version = _VERSION_ALIASES[key]
        check_fraction("covidx", self.validation_fraction, self.validation_seed)

    @property
    def carves_validation(self) -> bool:
        return "validation" not in VERSIONS[self.covidx_version][0] and self.validation_fraction > 0

    def split_sources(self) -> dict[str, str]:
        """Split -> what it is read from (recorded in metrics.json and model cards)."""
        files = VERSIONS[self.covidx_version][0]
        sources = {split: files[split] for split in files}
        if self.carves_validation:
            sources["train"] = f"{files['train']} minus the carved validation patients"
            sources["validation"] = (
                f"{self.validation_fraction:.0%} of {files['train']}'s patients (seed {self.validation_seed})"
            )
        return sources

    def label_files(self, data_dir: Path) -> dict[str, str]:
        """Split -> label file name in `data_dir`: the COVID-Net names, or for 9B Kaggle's version 5 names when only
        those are there."""
        files = VERSIONS[self.covidx_version][0]
        if self.covidx_version != "9B" or (data_dir / files["train"]).is_file():
            return files
        if (data_dir / "val.txt").is_file():
            raise CorpusError(
                f"{data_dir}: no train_COVIDx9B.txt, but train.txt, val.txt and test.txt: that is CXR-4 (Kaggle "
                "version 9), not 9B; use covidx_version='CXR-4'"
            )
        if (data_dir / KAGGLE_9B_FILES["train"]).is_file():
            return KAGGLE_9B_FILES
        return files

    @property
    def class_names(self) -> tuple[str, ...]:
        return VERSIONS[self.covidx_version][1]


def _read_label_file(path: Path, class_names: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """(line number, the 4 fields) for each non-empty line, the fields checked."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such file (expected the COVIDx label file as distributed)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CorpusError(f"{path}: cannot be read as text ({error})") from error
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != len(_FIELDS):
            raise CorpusError(
                f"{path}: line {number} has {len(fields)} field(s), expected {len(_FIELDS)} "
                f"({' '.join(_FIELDS)}, space-separated, no header): {line.strip()!r}"
            )
        if fields[2] not in class_names:
            raise CorpusError(
                f"{path}: line {number}: unknown class {fields[2]!r}; expected one of {', '.join(class_names)} "
                "(the file has no header line)"
            )
        rows.append((number, fields))
    if not rows:
        raise CorpusError(f"{path}: empty split (no image listed)")
    return rows


def read_splits(data_dir: str | Path, config: COVIDxConfig) -> dict[str, list[ImageRecord]]:
    """All validation of `covidx`, then its images per split as `ImageRecord`s in the label files' order."""
    data_dir = Path(data_dir).absolute()
    class_names = config.class_names
    records: dict[str, list[ImageRecord]] = {}
    # (source, patient id) -> where it was first seen; image id -> its patient, for the carve.
    patients: dict[tuple[str, str], tuple[str, Path, int]] = {}
    patient_of: dict[tuple[str, str], str] = {}
    for split, file_name in config.label_files(data_dir).items():
        path = data_dir / file_name
        seen: dict[str, int] = {}
        split_records = []
        for number, (patient_id, filename, class_name, source) in _read_label_file(path, class_names):
            if filename in seen:
                raise CorpusError(f"{path}: line {number} lists {filename} again (first on line {seen[filename]})")
            seen[filename] = number
            # Patient ids are only unique within a data source (several sources number patients 1, 2, ...).
            key = (source, patient_id)
            patient_of[split, filename] = f"{source}/{patient_id}"
            other = patients.setdefault(key, (split, path, number))
            if other[0] != split:
                raise CorpusError(
                    f"patient {patient_id} ({source}) is in two splits: {path} line {number} and {other[1]} line "
                    f"{other[2]}"
                )
            label = class_names.index(class_name)
            split_records.append(
                ImageRecord(
                    path=data_dir / IMAGE_FOLDERS[split] / filename,
                    image_id=filename,
                    patient_id=patient_id,
                    view="",
                    labels=tuple(float(index == label) for index in range(len(class_names))),
                    label=label,
                )
            )
        records[split] = split_records
    if config.carves_validation:
        carved = carve_validation_patients(
            (patient_of["train", record.image_id] for record in records["train"]),
            config.validation_fraction,
            config.validation_seed,
            carved_from=str(data_dir / config.label_files(data_dir)["train"]),
        )
        train = records.pop("train")
        records = {
            "train": [record for record in train if patient_of["train", record.image_id] not in carved],
            "validation": [record for record in train if patient_of["train", record.image_id] in carved],
            **records,
        }
    check_images(
        (record.path for rows in records.values() for record in rows),
        f"the COVIDx {config.covidx_version} label files under {data_dir}",
    )
    return records


class COVIDx(RecordCorpusBuilder):
    """COVIDx CXR: single-label (`label` index, plus `labels` one-hot), train / [validation] / test."""

    BUILDER_CONFIG_CLASS = COVIDxConfig
    VERSION = datasets.Version("1.0.0")
    # `load_cxr_dataset("covidx", d, version="9A")`: every BuilderConfig already has a `version` field of its own.
    OPTION_ALIASES = {"version": "covidx_version"}

    @classmethod
    def label_names(cls, data_dir: str | Path | None = None, **options) -> list[str]:
        return list(cls.BUILDER_CONFIG_CLASS(**options).class_names)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=f"COVIDx CXR version {self.config.covidx_version} (COVID-Net label files).",
            features=classification_features(self.config.class_names, single_label=True),
        )

    def read_records(self) -> dict[str, list[ImageRecord]]:
        return read_splits(self.config.data_dir, self.config)
