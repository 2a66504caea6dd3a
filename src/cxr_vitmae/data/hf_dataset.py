"""A Hugging Face dataset as a labelled corpus (`hf`): a Hub dataset repository or a local folder, with the `csv`
corpus's column options.

Option `path` names the dataset: a Hub dataset repository id (`org/cxr-small`, read with `datasets.load_dataset`,
`revision` and `name` (its subset) optional, cached by `datasets` and found there again offline), or a local folder:
a `save_to_disk` output (read with `datasets.load_from_disk`), an imagefolder (images and a `metadata.csv`) or a
folder of Parquet files (both read with `datasets.load_dataset(path)`). `data_dir` is not used.

The column options are the `csv` corpus's (`table.TableColumns`): `image_column` (default `image`), `label_columns`
or `class_column` (+ `class_names`), `patient_column`, `split_column`, `view_column`, the `uncertainty` / `blank`
policies, `validation_fraction`, `test_fraction`. The dataset's cells are read as the table's string cells are:

- a label cell may be an int, float, bool, string or None: 1 / 0 / -1 (uncertain) / blank (None, NaN, "");
- a class, patient, split or view cell: its text (a `ClassLabel` cell: its name; `ClassLabel` names are also the
  class order unless `class_names` says otherwise);
- the image cell: a `datasets.Image` (embedded bytes, or a file) or a file path (a string, relative to the local
  folder). It is read undecoded (`Image(decode=False)`), so 16-bit PNGs and DICOM files reach `load_radiograph` as
  they are, never through PIL's 8-bit conversion.

Splits: the dataset's own (`train`; `validation`, `val`, `valid` or `dev`; `test`), validation carved by patient
from train where there is none; a dataset with a `train` split only is carved as a table without a split column is
(validation, and test with `test_fraction`), or split by `split_column`. A patient in two of its splits is an error.

Every bad row is one CorpusError naming the dataset, the split, the row and the column before anything is built: a
missing column, an unknown label value, a blank cell, a patient in two splits, a missing or unreadable image (each
image is checked as the `csv` corpus checks its files: `validation.image_problem`). `image_id` is the image cell's
file name (its path below a local folder) where that names one image only, else `<split>/<row>`.

The cache is keyed on the source's own fingerprints (its files, its Hub commit), so a changed source is rebuilt;
`split_sources` names the dataset by its repository id and commit, or by the local folder's name only.
"""

import hashlib
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import datasets
import pandas as pd

from .builder import CorpusBuilder
from .errors import CorpusError
from .schema import ImageRecord, classification_features
from .table import SPLIT_VALUES, SPLITS, TableColumns, _options, check_columns, class_names_of, rows_to_records
from .validation import image_problem

# A Hub repository id: `name` or `org/name`.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# What a label cell may hold, as numbers (blank aside).
_LABEL_NUMBERS = (1.0, 0.0, -1.0)
# Rows whose image bytes are in memory at once while they are checked.
_CHECK_BATCH = 64


@dataclass
class HFDatasetConfig(TableColumns):
    """Options of the `hf` corpus (module docstring): the `TableColumns`, and

    Attributes:
        path: a Hub dataset repository id, or a local folder (save_to_disk output, imagefolder, Parquet files).
        revision: the Hub revision (branch, tag or commit) to read; default: the main branch.
        subset: the dataset's configuration (`load_dataset`'s `name`; the option is also spelled `name`).
    """

    path: str | None = None
    revision: str | None = None
    subset: str | None = None

    CORPUS = "hf"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.path, str) or not self.path.strip():
            raise CorpusError(
                "hf needs the option path: a Hub dataset repository id (org/name) or a local dataset folder"
            )

    def split_sources(self) -> dict[str, str]:
        source = open_source(self)
        return self.describe_splits(source.description, given_splits_of(self, source.splits))


@dataclass
class Source:
    """The dataset as read: its splits, the commit read (Hub) and how it is named in errors and in cards."""

    splits: datasets.DatasetDict
    commit: str | None
    name: str  # in errors: the path or repository id as given
    description: str  # in metrics.json and cards: no local absolute path


def _local_folder(config: HFDatasetConfig) -> Path | None:
    """The local folder `path` names, or None for a Hub repository id."""
    folder = Path(config.path).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise CorpusError(f"{config.path}: expected a dataset folder or a Hub dataset repository id, not a file")
        return folder
    if not _REPO_ID.match(config.path) or config.path.startswith((".", "~")):
        raise CorpusError(f"{config.path}: no such folder, and not a Hub dataset repository id (org/name)")
    return None


def open_source(config: HFDatasetConfig) -> Source:
    """The dataset `config.path` names, with `datasets`' own loaders (cached by them; Hub datasets found offline)."""
    folder = _local_folder(config)
    saved = folder is not None and any((folder / name).is_file() for name in ("dataset_dict.json", "state.json"))
    subset = f", subset {config.subset}" if config.subset else ""
    if folder is not None and config.revision is not None:
        raise CorpusError(f"{config.path}: option revision is for a Hub dataset, not a local folder")
    if saved and config.subset is not None:
        raise CorpusError(f"{config.path}: a save_to_disk folder has no subsets (option name / subset)")
    try:
        if saved:
            loaded = datasets.load_from_disk(str(folder))
            if isinstance(loaded, datasets.Dataset):  # one Dataset saved: its rows are the train split
                loaded = datasets.DatasetDict({"train": loaded})
        else:
            builder = datasets.load_dataset_builder(
                config.path if folder is None else str(folder), name=config.subset, revision=config.revision
            )
            builder.download_and_prepare()
            loaded = builder.as_dataset()
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as error:
        raise CorpusError(f"{config.path}: cannot be read as a Hugging Face dataset ({error})") from error
    if folder is not None:
        # Cards are published: a local dataset is named by its folder's name, never by where it is on this machine.
        return Source(loaded, None, config.path, f"the local dataset folder {folder.resolve().name}{subset}")
    # For a Hub dataset `datasets` keys its cache on the commit it read, which it gives as the builder's hash.
    commit = builder.hash if re.fullmatch(r"[0-9a-f]{40}", str(builder.hash)) else config.revision
    at = f" at commit {commit}" if commit else ""
    return Source(loaded, commit, config.path, f"the Hub dataset {config.path}{at}{subset}")


def own_split_names(source: Source) -> dict[str, str]:
    """The dataset's split names -> the corpus splits they are (`val`, `valid` and `dev` are validation)."""
    names = {}
    for split in source.splits:
        names[split] = SPLIT_VALUES.get(split.lower())
        if names[split] is None:
            raise CorpusError(
                f"{source.name}: split {split!r}; expected train, validation (val, valid, dev) or test "
                f"(its splits are {list(source.splits)})"
            )
    twice = sorted({corpus for corpus in names.values() if list(names.values()).count(corpus) > 1})
    if twice:
        raise CorpusError(f"{source.name}: splits {list(source.splits)} give {', '.join(twice)} more than once")
    return names


def given_splits_of(config: HFDatasetConfig, splits) -> set[str]:
    """The corpus splits the data name (for `describe_splits`): the dataset's own, unless it has a train split only
    (carved as a table without a split column is, or split by `split_column`)."""
    own = set(SPLIT_VALUES.get(split.lower(), split) for split in splits)
    if own == {"train"}:
        return set(SPLITS) if config.split_column else set()
    return own


# ---- cells: the dataset's values as the string cells `table.rows_to_records` reads ----


def _column_values(dataset: datasets.Dataset, column: str) -> list:
    """The column's values as Python objects, a `ClassLabel`'s as its names."""
    values = list(dataset[column])
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return [None if value is None or value < 0 else feature.int2str(value) for value in values]
    return values


def _is_blank(value) -> bool:
    return (
        value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip())
    )


def _number(value) -> float | None:
    """A label cell's number (bool, int, float, or a string holding one), or None."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def label_cell(value, where: str) -> str:
    """A label cell as the table's: "1", "0", "-1" or "" (blank); anything else is a CorpusError at `where`."""
    if _is_blank(value):
        return ""
    number = _number(value)
    if number not in _LABEL_NUMBERS:
        raise CorpusError(f"{where}: label value {value!r}; expected 1, 0, -1 (uncertain) or blank (None)")
    return str(int(number))


def text_cell(value) -> str:
    """A class, patient, split or view cell as text: blank for None / NaN, an integral float without its ".0"."""
    if _is_blank(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass
class SourceRows:
    """The dataset's rows as one table of string cells (index: the row's position among all rows), and what the
    table corpus's checks need to name them."""

    frame: pd.DataFrame
    rows: list[tuple[str, int]]  # position -> (the dataset's split, row in it)
    own_splits: list[str] | None  # each row's corpus split where the dataset has its own, else None
    config: HFDatasetConfig  # with a ClassLabel class column's names as class_names

    def where(self, index) -> str:
        """`where(index)` for the table checks: "org/name, split 'train', row 7" (the dataset itself for None)."""
        if index is None:
            return self.config.path
        split, row = self.rows[index]
        return f"{self.config.path}, split {split!r}, row {row}"


def source_rows(config: HFDatasetConfig, source: Source) -> SourceRows:
    """Every column the options name (but the image), in every split, as string cells; a missing column, or a label
    cell that is not 1 / 0 / -1 / blank, is a CorpusError naming split, row and column."""
    names = own_split_names(source)
    columns = {option: column for option, column in config.columns().items() if column != config.image_column}
    labels = set(config.label_columns or ())
    frames, rows, own = [], [], []
    for split, dataset in source.splits.items():
        # The table corpus's check and message, on the split's column names (an empty frame: no rows read yet).
        check_columns(pd.DataFrame(columns=list(dataset.features)), config, f"{source.name}, split {split!r}")
        cells = {}
        for column in dict.fromkeys(columns.values()):
            values = _column_values(dataset, column)
            if column in labels:
                at = f"{source.name}, split {split!r}, row {{}}, column {column!r}"
                cells[column] = [label_cell(value, at.format(row)) for row, value in enumerate(values)]
            else:
                cells[column] = [text_cell(value) for value in values]
        frames.append(pd.DataFrame(cells, index=range(len(rows), len(rows) + len(dataset)), dtype=object))
        rows += [(split, row) for row in range(len(dataset))]
        own += [names[split]] * len(dataset)
    frame = pd.concat(frames) if frames else pd.DataFrame()
    if not rows:
        raise CorpusError(f"{source.name}: no rows (expected one row per image)")
    config = replace(config, class_names=class_label_names(config, source)) if config.single_label else config
    return SourceRows(frame, rows, None if set(names.values()) == {"train"} else own, config)


def class_label_names(config: HFDatasetConfig, source: Source) -> tuple[str, ...] | None:
    """`class_names`, else the class column's `ClassLabel` names (the same in every split), else None (the sorted
    values, as for a table)."""
    if config.class_names is not None:
        return config.class_names
    found = {
        tuple(dataset.features[config.class_column].names)
        for dataset in source.splits.values()
        if isinstance(dataset.features.get(config.class_column), datasets.ClassLabel)
    }
    if len(found) > 1:
        raise CorpusError(f"{source.name}: column {config.class_column!r} has other ClassLabel names in each split")
    return found.pop() if found else None


# ---- images: read undecoded, checked before anything is built ----


def undecoded_images(source: Source, column: str) -> dict[str, datasets.Dataset]:
    """Each split's image column alone, undecoded: `{"bytes", "path"}` cells (a path column gives `bytes` None)."""
    cells = {}
    for split, dataset in source.splits.items():
        feature = dataset.features[column]
        if not isinstance(feature, datasets.Image) and feature not in (
            datasets.Value("string"),
            datasets.Value("large_string"),
        ):
            raise CorpusError(
                f"{source.name}, split {split!r}, column {column!r}: {feature}; expected images (datasets.Image) or "
                "image file paths (strings)"
            )
        cells[split] = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    return cells


def _cell_paths(images: datasets.Dataset, column: str) -> list[tuple[str | None, bool]]:
    """Each row's (path, holds bytes), read from Arrow without the bytes (None for a blank cell)."""
    found = []
    for batch in images.with_format("arrow").iter(batch_size=1000):
        for chunk in batch.column(column).chunks:
            paths = chunk.field("path").to_pylist()
            has_bytes = chunk.field("bytes").is_valid().to_pylist()
            blank = chunk.is_null().to_pylist()
            found += [(None, False) if none else (p, b) for p, b, none in zip(paths, has_bytes, blank, strict=True)]
    return found


def image_cells(config: HFDatasetConfig, source: Source, images: dict) -> tuple[list[dict], list, list[bool]]:
    """Each row's image as the corpus stores it (a file by its absolute path, or embedded bytes, read back from the
    source only when the example is written: `bytes` None here), the row's image id candidate (its path below the
    local folder, else its file name; None without one), and whether its bytes are embedded. A blank cell, or a
    relative path in a Hub dataset or a file listed twice, is a CorpusError (missing files: `check_images`)."""
    folder = _local_folder(config)
    column = config.image_column
    cells, names, embedded, files = [], [], [], {}
    for split, dataset in images.items():
        for row, (path, has_bytes) in enumerate(_cell_paths(dataset, column)):
            at = f"{source.name}, split {split!r}, row {row}, column {column!r}"
            if path is None and not has_bytes:
                raise CorpusError(f"{at}: blank; expected an image")
            if not has_bytes:
                file = Path(path).expanduser()
                if not file.is_absolute():
                    if folder is None:
                        raise CorpusError(f"{at}: {path!r} is a relative path, and a Hub dataset has no folder for it")
                    file = folder / file
                file = Path(os.path.normpath(file.absolute()))
                seen = files.setdefault(file, (split, row))
                if seen != (split, row):
                    raise CorpusError(f"{at}: {path!r} is the image already in split {seen[0]!r}, row {seen[1]}")
                path = str(file)
                inside = folder is not None and file.is_relative_to(os.path.normpath(folder.absolute()))
                names.append(file.relative_to(os.path.normpath(folder.absolute())).as_posix() if inside else file.name)
            else:
                names.append(path.replace("\\", "/") if path else None)
            cells.append({"bytes": None, "path": path})
            embedded.append(has_bytes)
    return cells, names, embedded


def image_ids(names: list, rows: list[tuple[str, int]]) -> list[str]:
    """Each row's `image_id`: its file name where that names one image only, else `<split>/<row>` (a dataset that
    embeds its images keeps file names only, and those repeat: CheXpert's `view1_frontal.jpg` in every study)."""
    counts = Counter(names)
    repeated = {name for name, count in counts.items() if count > 1}
    return [
        name if name is not None and name not in repeated else f"{split}/{row}"
        for name, (split, row) in zip(names, rows, strict=True)
    ]


def check_image_cells(config: HFDatasetConfig, source: Source, images: dict) -> None:
    """Every image readable and complete (`image_problem`, as the `csv` corpus checks its files; embedded bytes
    through a temporary file named like the cell, so a DICOM file is known by its suffix as well as its magic)."""
    column = config.image_column
    with tempfile.TemporaryDirectory(prefix="cxr-vitmae-hf-") as scratch:
        for split, dataset in images.items():
            for start in range(0, len(dataset), _CHECK_BATCH):
                for offset, cell in enumerate(dataset[start : start + _CHECK_BATCH][column]):
                    if cell["bytes"] is None:
                        file = Path(cell["path"])
                        problem = "missing" if not file.is_file() else image_problem(file)
                    else:
                        file = Path(scratch) / f"image{Path(cell['path'] or '').suffix.lower()}"
                        file.write_bytes(cell["bytes"])
                        problem = image_problem(file)
                    if problem is not None:
                        name = cell["path"] or "(embedded bytes)"
                        raise CorpusError(
                            f"{source.name}, split {split!r}, row {start + offset}, column {column!r}: image {name!r} "
                            f"is {problem}"
                        )


@dataclass
class HFCorpus:
    """The corpus read from a dataset: records per split, label names, and where each record's embedded image
    bytes are (`image_id` -> (the dataset's split, row)) in `images` (each split's undecoded image column)."""

    records: dict[str, list[ImageRecord]]
    names: tuple[str, ...]
    in_source: dict[str, tuple[str, int]]
    images: dict[str, datasets.Dataset]


def read_hf_corpus(config: HFDatasetConfig) -> HFCorpus:
    """The `hf` corpus: records per split and label names, after every check (module docstring)."""
    source = open_source(config)
    rows = source_rows(config, source)
    images = undecoded_images(source, config.image_column)
    cells, names, embedded = image_cells(config, source, images)
    ids = image_ids(names, rows.rows)
    records, label_names = rows_to_records(
        cells, ids, rows.frame, rows.config, rows.where, source.name, own_splits=rows.own_splits
    )
    check_image_cells(config, source, images)
    in_source = {image_id: row for image_id, row, held in zip(ids, rows.rows, embedded, strict=True) if held}
    return HFCorpus(records, label_names, in_source, images)


class HFDatasetCorpus(CorpusBuilder):
    """`hf`: a Hugging Face dataset (Hub or local) with the user's column choices (module docstring)."""

    BUILDER_CONFIG_CLASS = HFDatasetConfig
    VERSION = datasets.Version("1.0.0")
    NEEDS_DATA_DIR = False
    # `name` is every BuilderConfig's own field, so the dataset's subset is the field `subset`.
    OPTION_ALIASES = {"name": "subset"}

    @classmethod
    def label_names(cls, data_dir: str | Path | None = None, **options) -> list[str]:
        config = cls.BUILDER_CONFIG_CLASS(**options)
        if config.declared_label_names() is not None:
            return config.declared_label_names()
        source = open_source(config)
        rows = source_rows(config, source)
        return list(class_names_of(rows.frame, rows.config, rows.where))

    @classmethod
    def source_fingerprint(cls, **options) -> str:
        """A hash of what the source is (each split's `datasets` fingerprint, which follows its files, and the Hub
        commit read): `load_cxr_dataset` keys the corpus's cache on it."""
        config = cls.BUILDER_CONFIG_CLASS(**options)
        source = open_source(config)
        digest = hashlib.sha256(f"{source.commit};".encode())
        for split in sorted(source.splits):
            # `_fingerprint` is datasets' own content key for a Dataset (set by its builder or by save_to_disk).
            digest.update(f"{split}:{source.splits[split]._fingerprint};".encode())
        return digest.hexdigest()[:16]

    def _info(self) -> datasets.DatasetInfo:
        names = self.label_names(**_options(self.config))
        return datasets.DatasetInfo(
            description="A Hugging Face dataset of radiographs, with the user's label columns.",
            features=classification_features(names, single_label=self.config.single_label),
        )

    def _split_generators(self, dl_manager):
        corpus = read_hf_corpus(self.config)
        return [
            datasets.SplitGenerator(
                name=split,
                gen_kwargs={
                    "records": records,
                    "rows": [corpus.in_source.get(record.image_id) for record in records],
                    "images": corpus.images,
                },
            )
            for split, records in corpus.records.items()
        ]

    def _generate_examples(self, records: list[ImageRecord], rows: list, images: dict):
        column = self.config.image_column
        for record, row in zip(records, rows, strict=True):
            example = record.example()
            if row is not None:
                # Read back one row at a time: a corpus's images need not fit in memory.
                split, index = row
                example["image"] = {"bytes": images[split][index][column]["bytes"], "path": record.path["path"]}
            yield record.image_id, example


__all__ = ["HFDatasetConfig", "HFDatasetCorpus", "open_source", "read_hf_corpus"]
