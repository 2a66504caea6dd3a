"""The files `cxr-vitmae predict --output` writes: one row per image, appended batch by batch, resumable.

A file has a column `image` (the path as the command expanded it) and one column per label (the probability). Rows
are flushed after every batch, so a run that is killed loses at most the batch in flight, and `resume=True` reads back
which images are done. A kill can cut the last line short: CSV and JSONL rows are complete exactly when their line
ends, so a tail without a final newline is truncated away before appending.

Parquet keeps its row index in a footer written when the file is closed, so a killed `ParquetWriter` leaves a file
that cannot be read at all. Its rows therefore go to a JSONL part file beside it (`FILE.parquet.part.jsonl`, resumable
as above), and closing the output (also after an error) converts the part file into the Parquet file, after the rows
a previous run left there, in row groups, through a temporary file that replaces the old one atomically: at every
moment either the old Parquet file and the part file, or the new Parquet file, hold every row.

The errors file (`image,error`, CSV) lists the images of this run that could not be read; a resumed run tries them
again, so it starts a new one.
"""

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError

FORMATS = (".csv", ".jsonl", ".parquet")
PART_SUFFIX = ".part.jsonl"
ERRORS_SUFFIX = ".errors.csv"
# Rows per Parquet row group when the part file is converted: bounded memory, whatever the number of images.
PARQUET_ROWS_PER_GROUP = 10_000


def output_format(path: str | Path) -> str:
    """The suffix of `path` that names its format (one of `FORMATS`)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path}: unknown output format {suffix or '(no suffix)'!r}; use {', '.join(FORMATS)}")
    return suffix


def open_predictions(path: str | Path, labels: Sequence[str], resume: bool = False):
    """The writer for `path` (format from its suffix), with columns `image` and `labels`.

    Without `resume` an existing file is replaced; with it, the rows already there are kept (`writer.done` names
    their images) and new rows are appended.

    Raises:
        InputError: an unknown suffix, a label named `image`, or (`resume`) a file whose columns are not `image` and
            `labels` or that is not a file this command wrote.
    """
    columns = ["image", *labels]
    if "image" in labels:
        raise InputError(f"the model has a label named 'image', which is {path}'s image column; rename that label")
    writer = {".csv": CsvPredictions, ".jsonl": JsonlPredictions, ".parquet": ParquetPredictions}[output_format(path)]
    return writer(Path(path), columns, resume)


def default_errors_file(output: str | Path) -> Path:
    """`<output>.errors.csv`, where unreadable images are listed when `--errors` is not given."""
    return Path(f"{output}{ERRORS_SUFFIX}")


def complete_lines(path: Path) -> str:
    """The text of `path` up to its last newline: the lines a run wrote completely (a killed one may have left the
    last line half written). `cut_partial_line` removes the rest once the lines are known to be this command's."""
    data = path.read_bytes()
    try:
        return data[: data.rfind(b"\n") + 1].decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not a UTF-8 text file ({error}); is it an output of cxr-vitmae predict?") from error


def cut_partial_line(path: Path, complete: str) -> None:
    """Truncate `path` to its `complete` lines (`complete_lines`), so that appending starts on a fresh line."""
    os.truncate(path, len(complete.encode("utf-8")))


def _open_for_rows(path: Path, mode: str):
    """`path` opened to take rows batch after batch (no newline translation: CSV and JSONL lines end in "\\n")."""
    return open(path, mode, newline="", encoding="utf-8")  # noqa: SIM115 (held across batches; the writer closes it)


class CsvPredictions:
    """CSV rows `image,label1,label2,…` with a header line (module docstring)."""

    def __init__(self, path: Path, columns: list[str], resume: bool):
        self.path, self.columns, self.done = path, columns, set()
        existing = resume and path.is_file() and self._read_existing()
        self.file = _open_for_rows(path, "a" if existing else "w")
        self.writer = csv.writer(self.file, lineterminator="\n")
        if not existing:
            self.writer.writerow(columns)
            self.file.flush()

    def _read_existing(self) -> bool:
        """Fill `done` from the file; False when it has not even a complete header (it is then rewritten)."""
        complete = complete_lines(self.path)
        rows = csv.reader(io.StringIO(complete, newline=""))
        header = next(rows, None)
        if header is None:
            return False
        if header != self.columns:
            raise InputError(
                f"{self.path}: columns {header[:4]}… are not this model's (image, {', '.join(self.columns[1:4])}, …);"
                " resume with the model that wrote it, or write another --output"
            )
        for number, row in enumerate(rows, start=2):
            if len(row) != len(self.columns):
                raise InputError(f"{self.path}: line {number} has {len(row)} fields, expected {len(self.columns)}")
            self.done.add(row[0])
        cut_partial_line(self.path, complete)
        return True

    def write(self, rows: Sequence[tuple[str, dict[str, float]]]) -> None:
        self.writer.writerows([image, *(scores[label] for label in self.columns[1:])] for image, scores in rows)
        self.done.update(image for image, _ in rows)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class JsonlPredictions:
    """One JSON object per line, `{"image": …, label: probability, …}` (module docstring)."""

    def __init__(self, path: Path, columns: list[str], resume: bool):
        self.path, self.columns, self.done = path, columns, set()
        if resume and path.is_file():
            complete = complete_lines(path)
            for number, line in enumerate(complete.splitlines(), start=1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(f"{path}: line {number} is not JSON ({error})") from error
                if not isinstance(row, dict) or set(row) != set(columns):
                    found = sorted(row)[:4] if isinstance(row, dict) else type(row).__name__
                    raise InputError(
                        f"{path}: line {number} has keys {found}…, not this model's image + labels; resume with the "
                        "model that wrote it, or write another --output"
                    )
                self.done.add(row["image"])
            cut_partial_line(path, complete)
            self.file = _open_for_rows(path, "a")
        else:
            self.file = _open_for_rows(path, "w")

    def write(self, rows: Sequence[tuple[str, dict[str, float]]]) -> None:
        # One write per batch of whole lines: a kill can only cut the last one short, which resuming removes.
        self.file.write("".join(json.dumps({"image": image, **scores}) + "\n" for image, scores in rows))
        self.done.update(image for image, _ in rows)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class ParquetPredictions:
    """A Parquet file (`image` string, one float64 column per label), written through a JSONL part file (module
    docstring)."""

    def __init__(self, path: Path, columns: list[str], resume: bool):
        self.path, self.columns = path, columns
        self.part_path = Path(f"{path}{PART_SUFFIX}")
        if not resume:
            self.part_path.unlink(missing_ok=True)
        self.previous = resume and path.is_file()
        previous_images = self._previous_images() if self.previous else []
        self.part = JsonlPredictions(self.part_path, columns, resume)
        self.done = {*previous_images, *self.part.done}

    def _previous_images(self) -> list[str]:
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(self.path).names
            images = pq.read_table(self.path, columns=["image"]).column("image").to_pylist() if "image" in names else []
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"{self.path}: not a readable Parquet file ({error})") from error
        if names != self.columns:
            raise InputError(
                f"{self.path}: columns {names[:4]}… are not this model's (image, {', '.join(self.columns[1:4])}, …); "
                "resume with the model that wrote it, or write another --output"
            )
        return images

    def write(self, rows: Sequence[tuple[str, dict[str, float]]]) -> None:
        self.part.write(rows)
        self.done.update(image for image, _ in rows)

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.part.close()
        schema = pa.schema([("image", pa.string()), *((label, pa.float64()) for label in self.columns[1:])])
        temporary = Path(f"{self.path}.tmp")
        with pq.ParquetWriter(temporary, schema) as writer:
            if self.previous:
                for batch in pq.ParquetFile(self.path).iter_batches(batch_size=PARQUET_ROWS_PER_GROUP):
                    writer.write_batch(batch)
            with open(self.part_path, encoding="utf-8") as part:
                rows = []
                for line in part:
                    rows.append(json.loads(line))
                    if len(rows) == PARQUET_ROWS_PER_GROUP:
                        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                        rows = []
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        os.replace(temporary, self.path)
        self.part_path.unlink()


class ErrorLog:
    """`image,error` rows (CSV) of the images that could not be read, created at the first one and flushed per row.
    A stale log of an earlier run is removed at once: this run tries its images again."""

    def __init__(self, path: str | Path):
        self.path, self.file, self.count = Path(path), None, 0
        self.path.unlink(missing_ok=True)

    def write(self, image: str, error: str) -> None:
        if self.file is None:
            self.file = _open_for_rows(self.path, "w")
            self.writer = csv.writer(self.file, lineterminator="\n")
            self.writer.writerow(["image", "error"])
        self.writer.writerow([image, error])
        self.file.flush()
        self.count += 1

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
