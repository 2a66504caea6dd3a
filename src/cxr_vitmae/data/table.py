"""A user's own labelled radiographs: a folder of images and one table (`csv`), read as strictly as the public corpora.

Under `data_dir`: the images, in any folder structure (PNG 8/16-bit, JPEG, DICOM, mixed), and one table (CSV, TSV or
Parquet, option `table`; by default the one such file directly in `data_dir`) with one row per image. Options name
its columns:

- `image_column` (default `image`): the image's path, relative to `data_dir` (or absolute inside it);
- `label_columns`: multi-label findings, each cell 1 / 0 / -1 (uncertain) / blank, turned into targets by the
  `uncertainty` (default `"ignore"`: NaN, masked out of the loss and the metrics) and `blank` (default `"zeros"`)
  policies, one name or a mapping column → name, exactly as CheXpert's (`label_policy`); or
- `class_column`: one class per image (single-label); `class_names` fixes the class order (default: sorted values);
- `patient_column` (optional): patient ids as strings (MRNs, accession numbers). Without it each image is its own
  patient, and `split_sources` says so: images of one patient may then fall into two splits;
- `split_column` (optional): train / validation / test (`val`, `valid` and `dev` are read as validation). Without it,
  validation (`validation_fraction`, default 0.1) and test (`test_fraction`, default 0: no test split) are carved
  patient-disjoint with NIH's seeded rule (`validation.carve_patients`). A split column without validation rows
  gets validation carved from its train rows the same way.

Every bad row is a CorpusError naming the table, the line (row for Parquet) and the column before anything is
built: a missing column, an unknown label value, a blank image, patient or class cell, a path outside `data_dir`, an
image listed twice, a patient in two splits, a missing or unreadable image.

`TableColumns` and `rows_to_records` are shared with the `hf` corpus (a Hugging Face dataset with the same column
options, `hf_dataset.py`).
"""

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from .builder import CorpusConfig, RecordCorpusBuilder
from .errors import CorpusError
from .label_policy import BLANK_VALUES, UNCERTAINTY_VALUES, apply_policies, parse_label_cells, policy_values
from .schema import ImageRecord, classification_features
from .validation import carve_patients, check_fraction, image_problem

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".parquet": None}
# A split cell's accepted spellings (lower-cased) -> the split.
SPLIT_VALUES = {"train": "train", "test": "test", **dict.fromkeys(("validation", "val", "valid", "dev"), "validation")}
SPLITS = ("train", "validation", "test")


@dataclass
class TableColumns(CorpusConfig):
    """The column options a table corpus (`csv`) and a Hugging Face dataset (`hf`) share (module docstring).

    Attributes:
        image_column: the column naming each image (default "image").
        label_columns: the multi-label finding columns, in the order of the `labels` vector.
        class_column: the single-label class column (instead of `label_columns`).
        class_names: the classes in index order (default: the column's distinct values, sorted).
        patient_column: patient ids (strings); default: each image is its own patient.
        split_column: train / validation / test per row; default: carved by patient.
        view_column: the view (PA, AP, ...) when the table has one; default "".
        uncertainty: what -1 becomes: "ignore" (default, NaN), "zeros" or "ones"; or a mapping column -> policy.
        blank: what a blank label cell becomes: "zeros" (default) or "ignore"; or a mapping column -> policy.
        validation_fraction: share of the patients carved out as validation where no split says (default 0.1).
        test_fraction: share of the patients carved out as test where no split says (default 0: no test split).
        validation_seed: seed of both carves.
    """

    image_column: str = "image"
    label_columns: tuple[str, ...] | None = None
    class_column: str | None = None
    class_names: tuple[str, ...] | None = None
    patient_column: str | None = None
    split_column: str | None = None
    view_column: str | None = None
    uncertainty: str | dict[str, str] = "ignore"
    blank: str | dict[str, str] = "zeros"
    validation_fraction: float = 0.1
    test_fraction: float = 0.0
    validation_seed: int = 0

    CORPUS = "csv"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.label_columns, str):
            if "," in self.label_columns:
                raise CorpusError(
                    f"{self.CORPUS} option label_columns={self.label_columns!r} is one string; give a list, e.g. "
                    f"--option 'label_columns=[{', '.join(part.strip() for part in self.label_columns.split(','))}]'"
                )
            self.label_columns = (self.label_columns,)
        if self.label_columns is not None:
            self.label_columns = tuple(str(column) for column in self.label_columns)
            if not self.label_columns:
                raise CorpusError(f"{self.CORPUS} option label_columns is empty: name at least one column")
            repeated = sorted({column for column in self.label_columns if self.label_columns.count(column) > 1})
            if repeated:
                raise CorpusError(f"{self.CORPUS} option label_columns names {repeated} more than once")
        if (self.label_columns is None) == (self.class_column is None):
            raise CorpusError(
                f"{self.CORPUS}: give exactly one of the options label_columns (multi-label findings) and "
                "class_column (one class per image)"
            )
        if self.class_names is not None:
            if self.class_column is None:
                raise CorpusError(f"{self.CORPUS} option class_names is for class_column, not label_columns")
            self.class_names = tuple(str(name) for name in self.class_names)
            if len(set(self.class_names)) != len(self.class_names) or len(self.class_names) < 2:
                raise CorpusError(
                    f"{self.CORPUS} option class_names={list(self.class_names)}: expected 2 or more distinct names"
                )
        if self.label_columns is not None:
            # Resolved now so that a bad policy fails when the builder is made, not after the table is read.
            self.uncertainty_values()
            self.blank_values()
        check_fraction(self.CORPUS, self.validation_fraction, self.validation_seed)
        fraction = self.test_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise CorpusError(f"{self.CORPUS} option test_fraction={fraction!r}: expected a number in [0, 1)")
        if self.validation_fraction + self.test_fraction >= 1:
            raise CorpusError(f"{self.CORPUS}: validation_fraction + test_fraction must leave patients to train on")

    @property
    def single_label(self) -> bool:
        return self.class_column is not None

    def declared_label_names(self) -> list[str] | None:
        """The label names when the options give them (`label_columns`, `class_names`); None when they come from the
        data (a class column's values)."""
        names = self.label_columns if self.label_columns is not None else self.class_names
        return None if names is None else list(names)

    def uncertainty_values(self) -> np.ndarray:
        return policy_values(self.uncertainty, UNCERTAINTY_VALUES, "ignore", "uncertainty", self.label_columns)

    def blank_values(self) -> np.ndarray:
        return policy_values(self.blank, BLANK_VALUES, "zeros", "blank", self.label_columns)

    def columns(self) -> dict[str, str]:
        """Option -> column, for every column the options name."""
        named = {
            "image_column": self.image_column,
            "class_column": self.class_column,
            "patient_column": self.patient_column,
            "split_column": self.split_column,
            "view_column": self.view_column,
        }
        named = {option: column for option, column in named.items() if column is not None}
        for column in self.label_columns or ():
            named[f"label_columns[{column!r}]"] = column
        return named

    def describe_splits(self, source: str, given: set[str] = frozenset()) -> dict[str, str]:
        """Split -> how it is made from `source` (the table's file name, or the dataset), for metrics.json and
        model cards; `given` are the splits the data itself names (a split column, a dataset's own splits)."""
        patients = (
            f"patients from column {self.patient_column!r}"
            if self.patient_column
            else "no patient column: each image counted as its own patient"
        )
        carve = f"seed {self.validation_seed}; {patients}"
        sources = {}
        for split in SPLITS:
            if split in given:
                sources[split] = (
                    f"rows of {source} whose column {self.split_column!r} says {split}"
                    if self.split_column
                    else f"the {split} split of {source}"
                )
        if "validation" not in given and self.validation_fraction > 0:
            sources["validation"] = f"{self.validation_fraction:.0%} of {source}'s train patients, carved ({carve})"
        if "test" not in given and self.test_fraction > 0 and not given:
            sources["test"] = f"{self.test_fraction:.0%} of {source}'s patients, carved ({carve})"
        if "train" not in given:
            sources["train"] = f"{source} minus the carved patients ({carve})"
        elif len(sources) > len(given):
            sources["train"] += f" minus the carved patients ({carve})"
        return {split: sources[split] for split in SPLITS if split in sources}


@dataclass
class TableConfig(TableColumns):
    """Options of the `csv` corpus: the `TableColumns`, and `table`, the table's file (relative to `data_dir` or
    absolute; default: the one .csv / .tsv / .parquet file directly in `data_dir`)."""

    table: str | None = None

    def split_sources(self) -> dict[str, str]:
        if self.table:
            name = Path(self.table).name
        else:
            name = "the table"
            if self.data_dir and Path(self.data_dir).is_dir():
                with contextlib.suppress(CorpusError):  # no single table there: the policy without the file name
                    name = find_table(Path(self.data_dir), None).name
        return self.describe_splits(name, {"train", "validation", "test"} if self.split_column else set())


def find_table(data_dir: Path, table: str | None) -> Path:
    """The table file: `table` (relative to `data_dir`) or the one table file directly in `data_dir`."""
    if table is not None:
        path = Path(table).expanduser()
        path = path if path.is_absolute() else data_dir / path
        if not path.is_file():
            raise CorpusError(f"{path}: no such file (option table)")
        return path
    found = sorted(path for path in data_dir.iterdir() if path.suffix.lower() in TABLE_SUFFIXES and path.is_file())
    if len(found) != 1:
        listed = f": {', '.join(path.name for path in found)}" if found else ""
        raise CorpusError(
            f"{data_dir}: {len(found)} table files (.csv, .tsv, .parquet){listed}; name the one to read with the "
            "option table"
        )
    return found[0]


def read_table(path: Path) -> tuple[pd.DataFrame, str]:
    """The table as string cells (blank = ""), indexed by the line (CSV / TSV) or row (Parquet) a user would look
    up, and that word. Column names are stripped; a name given twice is an error."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise CorpusError(f"{path}: expected a .csv, .tsv or .parquet table")
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
            header = [str(column).strip() for column in frame.columns]
            frame = frame.astype(object).where(frame.notna(), "").astype(str)
            frame.index = np.arange(1, len(frame) + 1)
            unit = "row"
        else:
            # No header row for pandas: it would rename a repeated column silently; line numbers are kept.
            frame = pd.read_csv(
                path,
                sep=TABLE_SUFFIXES[suffix],
                header=None,
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                encoding="utf-8-sig",
            )
            if frame.empty:
                raise CorpusError(f"{path}: empty (expected a header line and one row per image)")
            header = [str(name).strip() for name in frame.iloc[0]]
            frame = frame.iloc[1:]
            frame.index = frame.index + 1
            unit = "line"
    except CorpusError:
        raise
    except (OSError, ValueError, ImportError, pd.errors.ParserError) as error:
        raise CorpusError(f"{path}: cannot be read as a {suffix[1:].upper()} table ({error})") from error
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise CorpusError(f"{path}: column(s) {repeated} appear more than once in the header")
    frame.columns = header
    frame = frame.apply(lambda column: column.str.strip())
    return frame[(frame != "").any(axis=1)], unit


def check_columns(frame: pd.DataFrame, config: TableColumns, source: str) -> None:
    """Every column the options name is in the table."""
    for option, column in config.columns().items():
        if column not in frame.columns:
            raise CorpusError(
                f"{source}: no column {column!r} (option {option}); its columns are {list(frame.columns)}"
            )


def _blank_cell(frame: pd.DataFrame, column: str, where, what: str) -> None:
    blank = frame[column] == ""
    if blank.any():
        raise CorpusError(f"{where(frame.index[blank.to_numpy()][0])}, column {column!r}: blank; expected {what}")


def class_names_of(frame: pd.DataFrame, config: TableColumns, where) -> tuple[str, ...]:
    """The classes of a single-label table: `class_names` (every cell must be one) or its sorted distinct values."""
    _blank_cell(frame, config.class_column, where, "a class name")
    if config.class_names is None:
        names = tuple(sorted(set(frame[config.class_column])))
        if len(names) < 2:
            raise CorpusError(
                f"{where(None)}: column {config.class_column!r} holds {len(names)} class(es); a classifier needs 2 "
                "or more"
            )
        return names
    unknown = ~frame[config.class_column].isin(config.class_names)
    if unknown.any():
        index = frame.index[unknown.to_numpy()][0]
        raise CorpusError(
            f"{where(index)}, column {config.class_column!r}: class {frame[config.class_column][index]!r}; "
            f"expected one of class_names {list(config.class_names)}"
        )
    return config.class_names


def label_targets(
    frame: pd.DataFrame, config: TableColumns, where, source: str
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """The `labels` matrix, the class indices (single-label; else None) and the label names of the table's rows."""
    if config.single_label:
        names = class_names_of(frame, config, where)
        index = frame[config.class_column].map({name: i for i, name in enumerate(names)}).to_numpy(dtype=np.int64)
        return np.eye(len(names), dtype=np.float32)[index], index, names
    raw = parse_label_cells(frame, config.label_columns, source, first_line=0)
    return apply_policies(raw, config.uncertainty_values(), config.blank_values()), None, config.label_columns


def patient_ids(frame: pd.DataFrame, config: TableColumns, image_ids: list[str], where) -> list[str]:
    if config.patient_column is None:
        logger.warning(
            "%s: no patient_column: each image is its own patient, so images of one patient may fall into two "
            "splits (name the column holding patient ids if there is one)",
            where(None),
        )
        return list(image_ids)
    _blank_cell(frame, config.patient_column, where, "a patient id")
    return frame[config.patient_column].tolist()


def given_splits(
    frame: pd.DataFrame, config: TableColumns, patients: list[str], where, own: list[str] | None = None
) -> list[str] | None:
    """Each row's split as the data name it: from the split column, or `own` (each row's split in the data itself,
    a Hugging Face dataset's own splits); None where neither says. A patient in two splits is an error naming both
    rows."""
    if own is not None and config.split_column is not None:
        raise CorpusError(f"{where(None)}: its own splits say where each row goes; split_column is for one split")
    if own is None and config.split_column is None:
        return None
    column = config.split_column
    at = (lambda index: f"{where(index)}, column {column!r}") if column else where
    splits, first_row = [], {}
    for index, value, patient in zip(frame.index, frame[column] if own is None else own, patients, strict=True):
        split = SPLIT_VALUES.get(value.lower())
        if split is None:
            raise CorpusError(f"{at(index)}: split {value!r}; expected train, validation or test")
        seen = first_row.setdefault(patient, (index, split))
        if seen[1] != split:
            raise CorpusError(
                f"{at(index)}: patient {patient!r} is in {split} here but in {seen[1]} on "
                f"{where(seen[0]).rsplit(', ', 1)[-1]} (patient leakage)"
            )
        splits.append(split)
    if config.test_fraction:
        raise CorpusError(f"{where(None)}: test_fraction carves a test split only where the data name no splits")
    return splits


def assign_splits(patients: list[str], given: list[str] | None, config: TableColumns, source: str) -> list[str]:
    """Each row's split: the given one, with validation (and, without any given split, test) carved by patient
    where the data name none."""
    if given is None:
        carved = carve_patients(
            patients,
            {"test": config.test_fraction, "validation": config.validation_fraction},
            config.validation_seed,
            carved_from=source,
        )
        return [carved.get(patient, "train") for patient in patients]
    if "validation" in given or config.validation_fraction == 0:
        return given
    train_patients = [patient for patient, split in zip(patients, given, strict=True) if split == "train"]
    carved = carve_patients(
        train_patients, {"validation": config.validation_fraction}, config.validation_seed, carved_from=source
    )
    return [carved.get(patient, split) for patient, split in zip(patients, given, strict=True)]


def image_paths(frame: pd.DataFrame, config: TableColumns, data_dir: Path, where) -> list[Path]:
    """Each row's image file inside `data_dir`, checked: no blank cell, no path outside, none listed twice, every
    file present and readable."""
    column = config.image_column
    _blank_cell(frame, column, where, "an image path")
    root = Path(os.path.normpath(data_dir.absolute()))
    paths, first_row = [], {}
    for index, value in zip(frame.index, frame[column], strict=True):
        path = Path(os.path.normpath(root / value.replace("\\", "/")))
        if not path.is_relative_to(root):
            raise CorpusError(f"{where(index)}, column {column!r}: {value!r} is outside data_dir {root}")
        seen = first_row.setdefault(path, index)
        if seen != index:
            raise CorpusError(
                f"{where(index)}, column {column!r}: {value!r} is the image already listed on "
                f"{where(seen).rsplit(', ', 1)[-1]} (duplicate image)"
            )
        paths.append(path)
    for index, value, path in zip(frame.index, frame[column], paths, strict=True):
        problem = "missing" if not path.is_file() else image_problem(path)
        if problem is not None:
            raise CorpusError(f"{where(index)}, column {column!r}: image {value!r} is {problem}")
    return paths


def rows_to_records(
    images: list,
    image_ids: list[str],
    frame: pd.DataFrame,
    config: TableColumns,
    where,
    source: str,
    own_splits: list[str] | None = None,
) -> tuple[dict[str, list[ImageRecord]], tuple[str, ...]]:
    """The table's rows as records per split, and the label names, after every check (module docstring). `images`
    are the rows' image paths (or cells), `where(index)` names a row in errors ("labels.csv, line 7"), `own_splits`
    each row's split where the data have their own (a Hugging Face dataset's; see `given_splits`)."""
    labels, classes, names = label_targets(frame, config, where, source)
    patients = patient_ids(frame, config, image_ids, where)
    splits = assign_splits(patients, given_splits(frame, config, patients, where, own_splits), config, source)
    views = frame[config.view_column].tolist() if config.view_column else [""] * len(frame)
    records: dict[str, list[ImageRecord]] = {split: [] for split in SPLITS}
    for position, split in enumerate(splits):
        records[split].append(
            ImageRecord(
                path=images[position],
                image_id=image_ids[position],
                patient_id=patients[position],
                view=views[position],
                labels=tuple(float(value) for value in labels[position]),
                label=None if classes is None else int(classes[position]),
            )
        )
    if not records["train"]:
        raise CorpusError(f"{source}: no train rows")
    return {split: rows for split, rows in records.items() if rows}, names


def _row_namer(path: Path, unit: str):
    """`where(index)` for error messages: "labels.csv, line 7" (the table itself for None)."""
    return lambda index: str(path) if index is None else f"{path}, {unit} {index}"


def read_table_corpus(data_dir: str | Path, config: TableConfig) -> tuple[dict[str, list[ImageRecord]], tuple]:
    """The `csv` corpus in `data_dir`: records per split and label names, after every check."""
    data_dir = Path(data_dir).absolute()
    if not data_dir.is_dir():
        raise CorpusError(f"{data_dir}: no such directory (expected the folder holding the images and the table)")
    path = find_table(data_dir, config.table)
    frame, unit = read_table(path)
    if frame.empty:
        raise CorpusError(f"{path}: no rows (expected one row per image)")
    check_columns(frame, config, str(path))

    where = _row_namer(path, unit)
    images = image_paths(frame, config, data_dir, where)
    image_ids = [image.relative_to(os.path.normpath(data_dir)).as_posix() for image in images]
    return rows_to_records(images, image_ids, frame, config, where, str(path))


class TableCorpus(RecordCorpusBuilder):
    """`csv`: a folder of the user's radiographs and one table of their labels (module docstring)."""

    BUILDER_CONFIG_CLASS = TableConfig
    VERSION = datasets.Version("1.0.0")

    @classmethod
    def label_names(cls, data_dir: str | Path | None = None, **options) -> list[str]:
        config = cls.BUILDER_CONFIG_CLASS(**options)
        if config.declared_label_names() is not None:
            return config.declared_label_names()
        if data_dir is None:
            raise CorpusError("csv: the classes of class_column come from the table; give data_dir or class_names")
        path = find_table(Path(data_dir).absolute(), config.table)
        frame, unit = read_table(path)
        check_columns(frame, config, str(path))
        return list(class_names_of(frame, config, _row_namer(path, unit)))

    def _info(self) -> datasets.DatasetInfo:
        names = self.label_names(self.config.data_dir, **_options(self.config))
        return datasets.DatasetInfo(
            description="A user's own radiographs and their label table.",
            features=classification_features(names, single_label=self.config.single_label),
        )

    def read_records(self) -> dict[str, list[ImageRecord]]:
        records, _ = read_table_corpus(self.config.data_dir, self.config)
        return records


def _options(config: CorpusConfig) -> dict:
    """The corpus options a config was made with (its fields beyond `datasets.BuilderConfig`'s)."""
    own = {field for field in datasets.BuilderConfig.__dataclass_fields__}
    return {name: getattr(config, name) for name in type(config).__dataclass_fields__ if name not in own}


__all__ = [
    "TableColumns",
    "TableConfig",
    "TableCorpus",
    "find_table",
    "read_table",
    "read_table_corpus",
    "rows_to_records",
]
