"""`cxr-vitmae predict` at archive scale: the inputs expanded into image paths, decoded in DataLoader workers, scored
batch by batch and written as they go.

Memory stays bounded whatever the number of images: a worker reads one file (`load_radiograph`), applies the model's
image processor and hands over the processed tensor, so at any time only the batches the loader prefetches
(`num_workers` × 2) and the one being scored are in memory, never the decoded radiographs of the whole run. Rows go to
the output file (`prediction_files`) after every batch. An image that cannot be read is listed in the errors file and
skipped, or, with `strict` (and always when the scores are printed as JSON), ends the run with the reader's one-line
message.
"""

import glob
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .errors import InputError
from .image_files import IMAGE_SUFFIXES, images_below
from .models import CXRImageProcessor, RadiographReadError, load_radiograph
from .models.pipeline_cxr import processor_input
from .predict import score_pixels
from .prediction_files import ErrorLog, default_errors_file, open_predictions

# A folder (or a glob's match) contributes its `IMAGE_SUFFIXES` files, as the `folder` corpus reads them. Files without
# a suffix (PACS exports often have none) are read only when named explicitly or listed in a .txt file.
LIST_SUFFIX = ".txt"


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """The image paths the command's INPUTs name, in the order given, each once (its first place).

    - a file: itself, whatever its suffix (a file that does not exist is kept, and reported as unreadable later);
    - a `.txt` file: the paths it lists, one per line, relative ones taken relative to the list's folder (blank lines
      skipped);
    - a folder: every PNG/JPEG/DICOM file in it or below it (`IMAGE_SUFFIXES`; hidden files and folders skipped), in
      sorted path order;
    - a glob pattern the shell did not expand (`'scans/**/*.dcm'`, recursive `**`): its matches, sorted; matched
      folders count as folders, matched files need a suffix of `IMAGE_SUFFIXES` or none.

    Raises:
        InputError: a list file, folder or pattern that names no image.
    """
    images: dict[str, None] = {}
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = _folder_images(path)
        elif path.suffix.lower() == LIST_SUFFIX:
            found = _listed_images(path)
        elif not path.exists() and glob.has_magic(given):
            found = _glob_images(given)
        else:
            found = [given]
        images.update(dict.fromkeys(found))
    return list(images)


def _folder_images(folder: Path) -> list[str]:
    found = [str(path) for path in images_below(folder)]
    if not found:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it or below it")
    return found


def _listed_images(list_file: Path) -> list[str]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{list_file}: cannot read this list of images ({error})") from error
    found = [line if os.path.isabs(line) else str(list_file.parent / line) for line in map(str.strip, lines) if line]
    if not found:
        raise InputError(f"{list_file}: the list names no image (expected one path per line)")
    return found


def _glob_images(pattern: str) -> list[str]:
    found = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if path.is_dir():
            found.extend(str(image) for image in images_below(path))
        elif path.suffix.lower() in IMAGE_SUFFIXES or not path.suffix:
            found.append(match)
    if not found:
        raise InputError(f"{pattern}: no image file matches this pattern")
    return found


def default_num_workers() -> int:
    """Decoding workers when `--num-workers` is not given: the cores this process may use, less one for the model's
    own work, at most 8 (a worker per core beyond that mostly adds memory)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(8, cores - 1))


class RadiographFiles(Dataset):
    """Image files read (`load_radiograph`) and processed (the model's processor) one per item, in a loader worker.

    An item is `{"image", "pixel_values"}`, or `{"image", "error"}` with the reader's message when the file cannot be
    read. For a stock processor (a native export) it also carries `saturation`, the share of pixels transformers' own
    8-bit loading would clip (`export_native.stock_8bit_saturation`), measured here so that the warning costs the
    main process nothing."""

    def __init__(self, images: Sequence[str], processor):
        self.images, self.processor = list(images), processor
        self.saturation = None
        if not isinstance(processor, CXRImageProcessor):
            from .hub.export_native import stock_8bit_saturation

            self.saturation = stock_8bit_saturation

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        try:
            radiograph = load_radiograph(image)
            pixels = self.processor(processor_input(self.processor, radiograph), return_tensors="pt")["pixel_values"]
        except RadiographReadError as error:
            return {"image": image, "error": str(error)}
        item = {"image": image, "pixel_values": pixels[0]}
        if self.saturation is not None:
            item["saturation"] = self.saturation(image)
        return item


def collate_items(items: list[dict]) -> dict:
    """A batch of `RadiographFiles` items: the read images' tensors stacked, every item's fields kept in order."""
    read = [item["pixel_values"] for item in items if "pixel_values" in item]
    return {
        "items": [{key: value for key, value in item.items() if key != "pixel_values"} for item in items],
        "pixel_values": torch.stack(read) if read else None,
    }


@dataclass
class Scored:
    """One image's outcome: `scores` (`{label: probability}`) or the `error` that kept it from being read."""

    image: str
    scores: dict[str, float] | None = None
    error: str | None = None


def scored_batches(
    model, processor, images: Sequence[str], batch_size: int = 8, num_workers: int | None = None
) -> Iterator[list[Scored]]:
    """The outcome of every image in `images`, batch by batch, in order (module docstring); `num_workers` None is
    `default_num_workers()`. A saturated 16-bit file under a stock processor gives its `SaturationWarning` here."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    num_workers = default_num_workers() if num_workers is None else num_workers
    if num_workers < 0:
        raise InputError(f"--num-workers must be 0 or more, got {num_workers}")
    device = next(model.parameters()).device
    loader = DataLoader(
        RadiographFiles(images, processor),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_items,
        pin_memory=device.type == "cuda",
    )
    for batch in loader:
        scores = iter(score_pixels(model, batch["pixel_values"]) if batch["pixel_values"] is not None else [])
        outcomes = []
        for item in batch["items"]:
            if "error" in item:
                outcomes.append(Scored(item["image"], error=item["error"]))
                continue
            if item.get("saturation", 0.0) > 0:
                from .hub.export_native import warn_if_saturated

                warn_if_saturated(item["image"])
            outcomes.append(Scored(item["image"], scores=next(scores)))
        yield outcomes


def predict_to_dict(
    model, processor, images: Sequence[str], batch_size: int = 8, num_workers: int | None = None
) -> dict[str, dict[str, float]]:
    """`{image: {label: probability}}` for every image, in order: what `predict` prints without `--output`.

    Raises:
        RadiographReadError: the first image that cannot be read (nothing is returned).
    """
    results = {}
    for batch in scored_batches(model, processor, images, batch_size, num_workers):
        for outcome in batch:
            if outcome.error is not None:
                raise RadiographReadError(outcome.error)
            results[outcome.image] = outcome.scores
    return results


@dataclass
class FileRun:
    """What `predict_to_file` did: images scored now, images already in the file (resumed), unreadable images and
    the errors file that lists them."""

    scored: int
    already_done: int
    unreadable: int
    errors_file: Path


def _model_fingerprint(model) -> str:
    """A hash of the model's labels and weights: which model wrote a predictions file."""
    digest = hashlib.sha256(json.dumps(model.config.id2label, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_same_run(output: Path, model, labels: list[str], resume: bool) -> str:
    """Record which model writes `output` (`<output>.run.json`), or, resuming, check it is the one that wrote it: a
    file of two models' scores would look like one. Returns the folder relative image paths in the file start from.

    Raises:
        InputError: resuming a file another model wrote.
    """
    record_path = output.with_name(output.name + ".run.json")
    fingerprint = _model_fingerprint(model)
    if resume and record_path.is_file() and output.is_file():
        record = json.loads(record_path.read_text())
        if record.get("model_fingerprint") != fingerprint:
            raise InputError(
                f"{output}: written by another model ({record.get('model')}); --resume with that model, or write "
                "this one's scores to a new file"
            )
        return record.get("cwd", os.getcwd())
    record = {"model": str(getattr(model, "name_or_path", "")), "labels": labels, "model_fingerprint": fingerprint}
    record_path.write_text(json.dumps({**record, "cwd": os.getcwd()}, indent=2) + "\n")
    return os.getcwd()


def predict_to_file(
    model,
    processor,
    images: Sequence[str],
    output: str | Path,
    *,
    resume: bool = False,
    strict: bool = False,
    errors: str | Path | None = None,
    batch_size: int = 8,
    num_workers: int | None = None,
) -> FileRun:
    """Score `images` into `output` (`.csv`, `.jsonl` or `.parquet`; `prediction_files`), a row per image, written
    after every batch, with a progress bar (images/s) on stderr. With `resume` the images already in `output` are
    skipped and the rest appended. An unreadable image is listed in `errors` (default `<output>.errors.csv`) and
    skipped, or, with `strict`, ends the run there (the rows before it stay written).

    Raises:
        InputError: `output` has another suffix or is `errors`, or (`resume`) holds another model's columns.
        RadiographReadError: with `strict`, the first image that cannot be read.
    """
    errors = Path(errors or default_errors_file(output))
    if errors.absolute() == Path(output).absolute():
        raise InputError(f"{errors}: the errors file cannot be the --output file")
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    cwd = _check_same_run(Path(output), model, labels, resume)
    writer = open_predictions(output, labels, resume=resume)
    error_log = ErrorLog(errors)
    # The same image may be spelled another way on resume (relative or absolute, through a symlink): compared as
    # resolved paths, from the folder the file's first run started in.
    done = {os.path.realpath(os.path.join(cwd, image)) for image in writer.done}
    pending = [image for image in images if os.path.realpath(image) not in done]
    run = FileRun(scored=0, already_done=len(images) - len(pending), unreadable=0, errors_file=error_log.path)
    # In a terminal the bar updates as stock tqdm does. Into a log file it first shows after 30 s and then every 30 s,
    # so a day-long run writes kilobytes and a short or failing one leaves stderr to its result. TQDM_DISABLE=1
    # silences it.
    pace = {} if sys.stderr.isatty() else {"mininterval": 30, "delay": 30}
    progress = tqdm(total=len(pending), unit="img", desc="predict", file=sys.stderr, dynamic_ncols=True, **pace)
    try:
        for batch in scored_batches(model, processor, pending, batch_size, num_workers):
            failed = next((i for i, outcome in enumerate(batch) if outcome.error is not None), None)
            if strict and failed is not None:
                # The rows before the unreadable image are kept, so that --resume continues right after it.
                writer.write([(outcome.image, outcome.scores) for outcome in batch[:failed]])
                raise RadiographReadError(batch[failed].error)
            for outcome in batch:
                if outcome.error is not None:
                    error_log.write(outcome.image, outcome.error)
            writer.write([(outcome.image, outcome.scores) for outcome in batch if outcome.error is None])
            run.scored += sum(outcome.error is None for outcome in batch)
            progress.update(len(batch))
    except BaseException:
        progress.leave = False  # a terminal keeps the error line alone
        raise
    finally:
        progress.close()
        writer.close()
        error_log.close()
    run.unreadable = error_log.count
    return run
