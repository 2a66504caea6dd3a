"""NIH ChestX-ray14 (Wang et al., CVPR 2017), read exactly as NIH and the Kaggle mirror distribute it.

Expected under `data_dir`:

- the images, either flat in `images/` (NIH's Box archives) or in `images_001/images/` … `images_012/images/`
  (Kaggle); file names are unique across the folders, so an index of name → path is built once;
- `Data_Entry_2017_v2020.csv` (preferred when present) or `Data_Entry_2017.csv`: one row per image. Its header has
  commas inside `OriginalImage[Width,Height]` and `OriginalImagePixelSpacing[x,y]`, so a CSV reader sees 11 columns
  (12 with the 2017 file's trailing comma); some copies say `Patient Sex` instead of `Patient Gender`;
- `train_val_list.txt` and `test_list.txt`: the official patient-disjoint split, one file name per line;
- optionally `BBox_List_2017.csv`: 984 boxes on 880 test images for the 8 ChestX-ray8 classes, which spells
  `Infiltrate` for the label file's `Infiltration` (`read_bounding_boxes`, and the `boxes` column of the dataset).

Splits are `train`, `validation` and `test`. `test` is `test_list.txt`. `validation` is carved from
`train_val_list.txt` by patient: a patient is in validation when it ranks among the first
`round(validation_fraction × n_patients)` patients ordered by SHA-256 of `"<validation_seed>:<patient id>"`, which
is deterministic on every platform and library version. Alternatively `split_files_dir` names a folder of
medical_mae / CheXNet-style split files (`train_official.txt`, `val_official.txt`, `test_official.txt`, or with
JLiangLab's `Xray14_` prefix): a file name and 14 whitespace-separated 0/1 labels per line, in NIH order. They then
define all three splits, and their labels must agree with the Data_Entry file.

`labels` are the 14 findings in NIH order (`NIH_CHESTXRAY14_LABELS`); `No Finding` is the all-zero vector.
"""

import csv
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import pandas as pd

from ..models.chest_xray_labels import NIH_CHESTXRAY14_LABELS
from .builder import CorpusBuilder, CorpusConfig
from .errors import CorpusError
from .schema import ImageRecord, classification_features
from .validation import carve_validation_patients, check_fraction, check_images, check_patients_disjoint, first_few

DATA_ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
# The header as a CSV reader splits it; index 5 is `Patient Gender` or, in some copies, `Patient Sex`.
DATA_ENTRY_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
)
SEX_COLUMNS = ("Patient Gender", "Patient Sex")
NO_FINDING = "No Finding"
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
SPLIT_FILE_NAMES = {"train": "train_official.txt", "validation": "val_official.txt", "test": "test_official.txt"}
SPLIT_FILE_PREFIXES = ("", "Xray14_")
BBOX_FILE = "BBox_List_2017.csv"
BBOX_COLUMNS = ("Image Index", "Finding Label", "Bbox [x", "y", "w", "h]")
# The box file's spellings that differ from the label file's.
BBOX_LABEL_SPELLINGS = {"Infiltrate": "Infiltration"}
NIH_VIEWS = ("PA", "AP")


def read_csv_strict(path: Path, expected: Callable[[list[str]], list[str]]) -> pd.DataFrame:
    """Read a CSV as strings, tolerating trailing empty fields but never a shifted column.

    `expected(header)` gives the columns the header must have (it sees the header with trailing empty names dropped
    and names stripped); a mismatch is a CorpusError listing both. pandas alone would silently use the first column
    as the index when every row has one field more than the header, or drop the surplus; here a row whose extra
    fields hold anything is a CorpusError naming its line.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            raw_header = next(csv.reader([handle.readline()]), [])
    except (OSError, UnicodeDecodeError) as error:
        raise CorpusError(f"{path}: cannot be read as a UTF-8 CSV file ({error})") from error
    width = len(raw_header)
    while raw_header and not raw_header[-1].strip():
        raw_header.pop()
    header = [name.strip() for name in raw_header]
    columns = expected(header)
    if header != columns:
        raise CorpusError(f"{path}: header mismatch: expected columns {columns}, found {header}")
    try:
        frame = pd.read_csv(
            path,
            header=None,
            skiprows=1,
            names=range(width + 4),
            dtype=str,
            keep_default_na=False,
            index_col=False,
            encoding="utf-8-sig",
            skip_blank_lines=False,
        )
    except pd.errors.ParserError as error:
        raise CorpusError(f"{path}: {error} (more fields than the header allows)") from error
    except (OSError, UnicodeDecodeError) as error:
        raise CorpusError(f"{path}: cannot be read as a UTF-8 CSV file ({error})") from error
    frame = frame.apply(lambda column: column.str.strip())
    surplus = (frame.iloc[:, len(header) :] != "").any(axis=1)
    if surplus.any():
        row = int(frame.index[surplus.to_numpy()][0])
        raise CorpusError(
            f"{path}, line {row + 2}: more fields than the {len(header)} columns of the header; "
            "the columns would be shifted"
        )
    frame = frame.iloc[:, : len(header)]
    frame.columns = header
    # skip_blank_lines=False keeps the line numbers right; blank lines are dropped here instead.
    return frame[(frame != "").any(axis=1)]


@dataclass(frozen=True)
class BoundingBox:
    """One box of `BBox_List_2017.csv` in the image's pixel coordinates (x, y = top-left corner). `label` is the label
    file's spelling (`Infiltration`, which the box file writes `Infiltrate`)."""

    label: str
    x: float
    y: float
    w: float
    h: float


@dataclass
class NIHChestXray14Config(CorpusConfig):
    """Options of the `nih-chestxray14` corpus.

    Attributes:
        validation_fraction: share of the train_val *patients* carved out as `validation` (0.1 by default; medical_mae's
            split files hold about 13 % of the train_val patients and images). 0 gives no validation split. Ignored
            when `split_files_dir` is set.
        validation_seed: seed of the patient carve (fixed, so that every run gets the same validation patients).
        split_files_dir: folder of medical_mae / CheXNet-style split files (absolute, or relative to `data_dir`);
            when set these define train / validation / test.
        metadata_file: the Data_Entry CSV (absolute, or relative to `data_dir`); by default
            `Data_Entry_2017_v2020.csv` when present, else `Data_Entry_2017.csv`.
        views: the `View Position` values kept (`"PA"`, `"AP"`, or `"all"` for both, the default).
    """

    validation_fraction: float = 0.1
    validation_seed: int = 0
    split_files_dir: str | None = None
    metadata_file: str | None = None
    views: tuple[str, ...] = NIH_VIEWS

    def __post_init__(self):
        super().__post_init__()
        views = (self.views,) if isinstance(self.views, str) else tuple(self.views)
        views = NIH_VIEWS if tuple(v.lower() for v in views) == ("all",) else tuple(v.upper() for v in views)
        unknown = [v for v in views if v not in NIH_VIEWS]
        if unknown or not views:
            raise CorpusError(f"nih-chestxray14 option views={self.views!r}: expected 'all' or a subset of {NIH_VIEWS}")
        self.views = views
        check_fraction("nih-chestxray14", self.validation_fraction, self.validation_seed)

    def split_sources(self) -> dict[str, str]:
        """Split -> what it is read from (recorded in metrics.json and model cards)."""
        if self.split_files_dir is not None:
            return {split: f"{name} in split_files_dir" for split, name in SPLIT_FILE_NAMES.items()}
        return {
            "train": f"{TRAIN_VAL_LIST} minus the carved validation patients",
            "validation": f"{self.validation_fraction:.0%} of the train_val patients, seed {self.validation_seed}",
            "test": f"{TEST_LIST}, the official test list",
        }


@dataclass(frozen=True)
class _Entry:
    line: int
    patient_id: str
    view: str
    labels: tuple[float, ...]


def _resolve(data_dir: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else data_dir / path


def _metadata_path(data_dir: Path, config: NIHChestXray14Config) -> Path:
    if config.metadata_file is not None:
        path = _resolve(data_dir, config.metadata_file)
        if not path.is_file():
            raise CorpusError(f"{path}: metadata_file not found")
        return path
    for name in DATA_ENTRY_FILES:
        if (data_dir / name).is_file():
            return data_dir / name
    raise CorpusError(f"{data_dir}: neither {' nor '.join(DATA_ENTRY_FILES)} found (the NIH ChestX-ray14 metadata)")


def _parse_findings(text: str, path: Path, line: int, cache: dict) -> tuple[float, ...]:
    if text in cache:
        return cache[text]
    findings = [finding.strip() for finding in text.split("|")]
    unknown = [finding for finding in findings if finding not in NIH_CHESTXRAY14_LABELS and finding != NO_FINDING]
    if unknown:
        raise CorpusError(
            f"{path}, line {line}, column 'Finding Labels': unknown label {unknown[0]!r} in {text!r}; expected "
            f"'{NO_FINDING}' or '|'-separated names from {', '.join(NIH_CHESTXRAY14_LABELS)}"
        )
    if NO_FINDING in findings and len(findings) > 1:
        raise CorpusError(
            f"{path}, line {line}, column 'Finding Labels': '{NO_FINDING}' must stand alone, got {text!r}"
        )
    cache[text] = tuple(float(name in findings) for name in NIH_CHESTXRAY14_LABELS)
    return cache[text]


def _data_entry_columns(header: list[str]) -> list[str]:
    columns = list(DATA_ENTRY_COLUMNS)
    if len(header) > 5 and header[5] in SEX_COLUMNS:
        columns[5] = header[5]
    return columns


def read_data_entry(path: Path) -> dict[str, _Entry]:
    """image file name → its row of the Data_Entry CSV, validated."""
    frame = read_csv_strict(path, _data_entry_columns)
    entries: dict[str, _Entry] = {}
    findings_cache: dict[str, tuple[float, ...]] = {}
    columns = (frame.index, frame["Image Index"], frame["Finding Labels"], frame["Patient ID"], frame["View Position"])
    for row, name, findings, patient, view in zip(*columns, strict=True):
        line = int(row) + 2
        if not name:
            raise CorpusError(f"{path}, line {line}, column 'Image Index': empty")
        if name in entries:
            raise CorpusError(f"{path}, line {line}: image {name} is listed twice (first on line {entries[name].line})")
        if not patient.isdigit():
            raise CorpusError(f"{path}, line {line}, column 'Patient ID': expected an integer, got {patient!r}")
        labels = _parse_findings(findings, path, line, findings_cache)
        entries[name] = _Entry(line, f"{int(patient):08d}", view.upper(), labels)
    if not entries:
        raise CorpusError(f"{path}: no rows")
    return entries


def _read_name_list(path: Path) -> list[str]:
    if not path.is_file():
        raise CorpusError(f"{path}: not found (the official NIH split list)")
    names, seen = [], {}
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        name = text.strip()
        if not name:
            continue
        if name in seen:
            raise CorpusError(f"{path}, line {line}: {name} is listed twice (first on line {seen[name]})")
        seen[name] = line
        names.append(name)
    return names


def _check_known(names: list[str], entries: dict, path: Path, metadata: Path) -> None:
    unknown = [name for name in names if name not in entries]
    if unknown:
        raise CorpusError(f"{path}: {len(unknown)} image(s) are not in {metadata.name}: {first_few(unknown)}")


def _official_test(data_dir: Path, entries: dict, metadata: Path) -> list[str]:
    test = _read_name_list(data_dir / TEST_LIST)
    _check_known(test, entries, data_dir / TEST_LIST, metadata)
    return test


def _official_splits(data_dir: Path, entries: dict, metadata: Path, config) -> dict[str, list[str]]:
    train_val = _read_name_list(data_dir / TRAIN_VAL_LIST)
    _check_known(train_val, entries, data_dir / TRAIN_VAL_LIST, metadata)
    test = _official_test(data_dir, entries, metadata)
    both = sorted(set(train_val) & set(test))
    if both:
        raise CorpusError(f"{len(both)} image(s) are in both {TRAIN_VAL_LIST} and {TEST_LIST}: {first_few(both)}")
    validation = carve_validation_patients(
        {entries[name].patient_id for name in train_val},
        config.validation_fraction,
        config.validation_seed,
        carved_from=TRAIN_VAL_LIST,
    )
    splits = {"train": [name for name in train_val if entries[name].patient_id not in validation]}
    if validation:
        splits["validation"] = [name for name in train_val if entries[name].patient_id in validation]
    splits["test"] = test
    return splits


def _split_file(directory: Path, split: str) -> Path:
    candidates = [directory / f"{prefix}{SPLIT_FILE_NAMES[split]}" for prefix in SPLIT_FILE_PREFIXES]
    for path in candidates:
        if path.is_file():
            return path
    raise CorpusError(f"{directory}: no {split} split file (expected {' or '.join(p.name for p in candidates)})")


def _read_split_file(path: Path, entries: dict, metadata: Path) -> list[str]:
    names: list[str] = []
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 1 + len(NIH_CHESTXRAY14_LABELS) or any(value not in ("0", "1") for value in fields[1:]):
            raise CorpusError(
                f"{path}, line {line}: expected a file name and {len(NIH_CHESTXRAY14_LABELS)} labels 0/1 in NIH "
                f"order, found {text.strip()!r}"
            )
        name = Path(fields[0]).name
        if name not in entries:
            raise CorpusError(f"{path}, line {line}: {name} is not in {metadata.name}")
        labels = tuple(float(value) for value in fields[1:])
        if labels != entries[name].labels:
            differ = [
                f"{label} {int(mine)} vs {int(theirs)}"
                for label, mine, theirs in zip(NIH_CHESTXRAY14_LABELS, labels, entries[name].labels, strict=True)
                if mine != theirs
            ]
            raise CorpusError(
                f"{path}, line {line}: the labels of {name} disagree with {metadata.name} line "
                f"{entries[name].line} (split file vs Data_Entry: {', '.join(differ)})"
            )
        names.append(name)
    return names


def _split_files_splits(directory: Path, entries: dict, metadata: Path) -> dict[str, list[str]]:
    if not directory.is_dir():
        raise CorpusError(f"{directory}: split_files_dir is not a directory")
    splits, seen = {}, {}
    for split in SPLIT_FILE_NAMES:
        path = _split_file(directory, split)
        splits[split] = _read_split_file(path, entries, metadata)
        for name in splits[split]:
            if name in seen:
                raise CorpusError(f"{path}: {name} is also listed in {seen[name].name}")
            seen[name] = path
    return splits


def index_images(data_dir: Path) -> dict[str, Path]:
    """file name → path for `images/*` and `images_*/images/*`, scanned once."""
    folders = [data_dir / "images"] + sorted(data_dir.glob("images_*/images"))
    index: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            # Names are unique within a folder; across folders the first (sorted) one wins.
            for entry in os.scandir(folder):
                if entry.is_file():
                    index.setdefault(entry.name, folder / entry.name)
    return index


def read_bounding_boxes(data_dir: str | Path) -> dict[str, list[BoundingBox]]:
    """image file name → its boxes in `BBox_List_2017.csv` (empty when the corpus has no box file).

    Labels use the label file's spelling (`Infiltrate` → `Infiltration`); coordinates are floats in the pixels of
    the original image.
    """
    path = Path(data_dir) / BBOX_FILE
    if not path.is_file():
        return {}
    frame = read_csv_strict(path, lambda header: list(BBOX_COLUMNS))
    boxes: dict[str, list[BoundingBox]] = {}
    for row, values in zip(frame.index, frame.itertuples(index=False, name=None), strict=True):
        line = int(row) + 2
        name, label, *coordinates = values
        label = BBOX_LABEL_SPELLINGS.get(label, label)
        if label not in NIH_CHESTXRAY14_LABELS:
            raise CorpusError(
                f"{path}, line {line}, column 'Finding Label': unknown label {values[1]!r}; expected one of "
                f"{', '.join(NIH_CHESTXRAY14_LABELS)} (or 'Infiltrate')"
            )
        try:
            x, y, w, h = (float(value) for value in coordinates)
        except ValueError:
            raise CorpusError(f"{path}, line {line}: box {coordinates} is not four numbers x, y, w, h") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            raise CorpusError(f"{path}, line {line}: box {coordinates} needs finite x, y and positive w, h")
        boxes.setdefault(name, []).append(BoundingBox(label, x, y, w, h))
    return boxes


def _read_corpus(
    data_dir: str | Path, config: NIHChestXray14Config | None = None
) -> tuple[dict[str, list[ImageRecord]], dict[str, list[BoundingBox]]]:
    config = config if config is not None else NIHChestXray14Config()
    data_dir = Path(data_dir).absolute()
    if not data_dir.is_dir():
        raise CorpusError(f"{data_dir}: no such directory (expected the NIH ChestX-ray14 corpus)")
    metadata = _metadata_path(data_dir, config)
    entries = read_data_entry(metadata)
    if config.split_files_dir is not None:
        names = _split_files_splits(_resolve(data_dir, config.split_files_dir), entries, metadata)
    else:
        names = _official_splits(data_dir, entries, metadata, config)
    check_patients_disjoint(
        {split: {entries[name].patient_id for name in split_names} for split, split_names in names.items()},
        str(data_dir),
    )

    boxes = read_bounding_boxes(data_dir)
    unlisted = [name for name in boxes if name not in entries]
    if unlisted:
        raise CorpusError(
            f"{data_dir / BBOX_FILE}: {len(unlisted)} boxed image(s) not in {metadata.name}: {first_few(unlisted)}"
        )

    kept = {
        split: [name for name in split_names if entries[name].view in config.views]
        for split, split_names in names.items()
    }
    for split, split_names in kept.items():
        if not split_names:
            raise CorpusError(
                f"{data_dir}: the {split} split is empty ({len(names[split])} image(s) before keeping views "
                f"{list(config.views)})"
            )

    index = index_images(data_dir)
    wanted = [name for split_names in kept.values() for name in split_names]
    missing = [name for name in wanted if name not in index]
    if missing:
        raise CorpusError(
            f"{len(missing)} of {len(wanted)} image(s) listed in {metadata.name} are missing under "
            f"{data_dir}/images/ or {data_dir}/images_0NN/images/: {first_few(missing)}"
        )
    check_images([index[name] for name in wanted], str(data_dir / metadata.name))

    splits = {
        split: [
            ImageRecord(
                path=index[name],
                image_id=name,
                patient_id=entries[name].patient_id,
                view=entries[name].view,
                labels=entries[name].labels,
            )
            for name in split_names
        ]
        for split, split_names in kept.items()
    }
    return splits, boxes


def official_test_patients(data_dir: str | Path, config: NIHChestXray14Config | None = None) -> dict[str, str]:
    """{image name: patient id} of NIH's official test split (`test_list.txt`), whatever split `config` uses: what
    must stay out of anything trained on, even when split files define another test set."""
    config = config if config is not None else NIHChestXray14Config()
    data_dir = Path(data_dir).absolute()
    metadata = _metadata_path(data_dir, config)
    entries = read_data_entry(metadata)
    return {name: entries[name].patient_id for name in _official_test(data_dir, entries, metadata)}


def read_splits(data_dir: str | Path, config: NIHChestXray14Config | None = None) -> dict[str, list[ImageRecord]]:
    """The validated splits (`train`, `validation`, `test`) of the corpus in `data_dir` under `config`.

    Everything that can be wrong with the corpus is checked here, before any example is generated: header, label
    strings, split lists, patient leakage between splits, empty splits, missing and unreadable images.

    Raises:
        CorpusError: naming the file, line or column and what was expected.
    """
    return _read_corpus(data_dir, config)[0]


def nih_features() -> datasets.Features:
    """`classification_features` for the 14 NIH labels plus `boxes`: a list of {label, x, y, w, h}, empty for the
    images without a box."""
    box = {
        "label": datasets.Value("string"),
        "x": datasets.Value("float64"),
        "y": datasets.Value("float64"),
        "w": datasets.Value("float64"),
        "h": datasets.Value("float64"),
    }
    return datasets.Features({**classification_features(NIH_CHESTXRAY14_LABELS), "boxes": datasets.List(box)})


class NIHChestXray14(CorpusBuilder):
    """NIH ChestX-ray14: 112,120 frontal radiographs of 30,805 patients, 14 NLP-mined findings."""

    BUILDER_CONFIG_CLASS = NIHChestXray14Config
    VERSION = datasets.Version("1.0.0")

    @classmethod
    def label_names(cls, data_dir: str | Path | None = None, **options) -> list[str]:
        cls.BUILDER_CONFIG_CLASS(**options)  # validates the options
        return list(NIH_CHESTXRAY14_LABELS)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=__doc__,
            features=nih_features(),
            homepage="https://nihcc.app.box.com/v/ChestXray-NIHCC",
            citation="Wang et al., ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks, CVPR 2017.",
        )

    def _split_generators(self, dl_manager):
        if not self.config.data_dir:
            raise CorpusError("nih-chestxray14 needs data_dir: the folder holding the corpus as distributed")
        splits, boxes = _read_corpus(self.config.data_dir, self.config)
        return [
            datasets.SplitGenerator(
                name=split,
                gen_kwargs={
                    "records": records,
                    "boxes": {r.image_id: boxes[r.image_id] for r in records if r.image_id in boxes},
                },
            )
            for split, records in splits.items()
        ]

    def _generate_examples(self, records: list[ImageRecord], boxes: dict[str, list[BoundingBox]]):
        for record in records:
            yield (
                record.image_id,
                {**record.example(), "boxes": [asdict(box) for box in boxes.get(record.image_id, ())]},
            )


__all__ = [
    "BoundingBox",
    "NIHChestXray14",
    "NIHChestXray14Config",
    "nih_features",
    "read_bounding_boxes",
    "read_splits",
]
