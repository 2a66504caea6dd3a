"""`cxr-vitmae prepare`: decode and resize a corpus once into a self-contained Arrow copy that loaders read instead.

Decoding a 1024x1024 PNG costs about ten times more than everything a training step does to a 256x256 image, so
`prepare_corpus` decodes every image once with `load_radiograph`, resizes its short side to `size` (bicubic,
antialiased: the image processor's torchvision kernel) and saves the corpus with `DatasetDict.save_to_disk`: the
`image` column holds the resized images as embedded bytes (see "Storage format") and every other column is
unchanged, except NIH's `boxes`, which are scaled with their image.
`load_cxr_dataset(name, prepared_dir, **options)` then returns the prepared copy, after checking that it was
prepared from the same corpus with the same options.

Storage format: uncompressed binary netpbm (PGM for grayscale, PPM for colour) inside `datasets.Image`. 8-bit
sources are stored with 8 bits (maxval 255), anything finer (16-bit PNG, DICOM) as 16-bit PGM (maxval 65535, which
PIL opens as mode "I" and `load_radiograph` rescales by 65535), so the only loss is the resize itself.
- Why netpbm, not PNG: PIL decodes a 256x256 PGM in about 0.02 ms, a 256x256 PNG in 0.3-0.7 ms (its per-row
  unfiltering and zlib, even at compression level 0). After preparation the decode would otherwise cost as much as
  the whole pre-training transform and eat a third of the 10x the cache exists for. The price is disk: 64 KiB per
  8-bit 256x256 image (about 7 GiB for NIH's 112,120) against about 35 KiB as PNG.
- Why inside `datasets.Image`, not as arrays: the prepared DatasetDict keeps exactly the schema of the unprepared
  one, so every consumer (transforms, `with_transform`, the image processor) reads it unchanged; variable image
  shapes would also not fit `Array2D`. The embedded file's name is the source's with the suffix `.pgm` / `.ppm`.

Interrupted runs resume: each split is processed in chunks of `chunk_size` rows, each chunk's Arrow files are
recorded as complete in a marker file only once `Dataset.map` has returned, and a rerun with the same request
reuses the completed chunks. The final DatasetDict is written next, and the manifest `cxr_vitmae_prepared.json`
last, so a directory without a manifest is never mistaken for a complete one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvF

from ..models.image_processing_cxr import RadiographReadError, load_radiograph
from . import label_names, load_cxr_dataset, metadata_fingerprint
from .corpora import builder_class, config_options
from .errors import CorpusError
from .phantoms import PHANTOM_RECORD
from .prepared_copy import FORMAT_VERSION, MANIFEST_NAME, builder_version, read_manifest

STORAGE = "binary netpbm in datasets.Image: 8-bit PGM/PPM for 8-bit sources, 16-bit PGM otherwise"
_PARTIAL_DIR = ".prepare-partial"
_REQUEST_FILE = "request.json"


def _source(image: dict[str, Any]) -> Any:
    if image.get("bytes") is not None:
        return Image.open(io.BytesIO(image["bytes"]))
    return image["path"]


def _encode_image(image: dict[str, Any], size: int) -> tuple[dict[str, Any], tuple[float, float]]:
    """One `datasets.Image` cell (undecoded) → the same cell holding the resized image (netpbm bytes), and the
    factors (x, y) the image was scaled by (1 when it was already small enough)."""
    try:
        array = load_radiograph(_source(image))
    except RadiographReadError as error:
        raise CorpusError(f"{image.get('path')}: {error}") from error
    if array.ndim == 3 and all(np.array_equal(array[..., 0], array[..., c]) for c in (1, 2)):
        array = array[..., 0]
    # load_radiograph computes v / 255 in float32 for 8-bit data, so this identity holds exactly for 8-bit sources
    # (and for finer sources whose values all happen to be 8-bit ones, which 8 bits then store losslessly).
    eight_bit = np.array_equal(array, (array * 255 + 0.5).astype(np.uint8).astype(np.float32) / np.float32(255))

    tensor = torch.from_numpy(array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1)))
    source_height, source_width = tensor.shape[-2:]
    if min(source_height, source_width) > size:
        tensor = tvF.resize(tensor, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    scale = (tensor.shape[-1] / source_width, tensor.shape[-2] / source_height)
    # Bicubic overshoots [0, 1] by a little at sharp edges; the source itself was in range.
    values = tensor.clamp_(0, 1).numpy()

    if eight_bit:
        quantised = (values * 255 + 0.5).astype(np.uint8)
        pil = (
            Image.fromarray(quantised[0], "L") if len(quantised) == 1 else Image.fromarray(quantised.transpose(1, 2, 0))
        )
    elif len(values) == 1:
        pil = Image.fromarray((values[0] * 65535 + 0.5).astype(np.uint16))
    else:
        raise CorpusError(
            f"{image.get('path')}: a colour image with more than 8 bits per channel, which PIL cannot store; "
            "convert it to 16-bit grayscale (radiographs are grayscale) before preparing."
        )
    buffer = io.BytesIO()
    pil.save(buffer, format="PPM")  # binary P5 (grayscale, 8 or 16 bit) or P6 (RGB)
    path = image.get("path")
    suffix = ".ppm" if pil.mode == "RGB" else ".pgm"
    return {"bytes": buffer.getvalue(), "path": Path(path).with_suffix(suffix).name if path else None}, scale


def _encode_batch(batch: dict[str, list], rank: int | None, size: int) -> dict[str, list]:
    if rank is not None:
        # One of num_proc worker processes: torch's default of one thread per core in each would oversubscribe.
        torch.set_num_threads(1)
    encoded = [_encode_image(image, size) for image in batch["image"]]
    output = {"image": [cell for cell, _ in encoded]}
    if "boxes" in batch:
        # NIH's localisation boxes follow their image into the resized pixel grid.
        output["boxes"] = [
            [{**box, "x": box["x"] * sx, "y": box["y"] * sy, "w": box["w"] * sx, "h": box["h"] * sy} for box in boxes]
            for boxes, (_, (sx, sy)) in zip(batch["boxes"], encoded, strict=True)
        ]
    return output


def _chunk_files(directory: Path, stem: str) -> list[Path]:
    return sorted(directory.glob(f"{stem}*.arrow"))


def _atomic_write_json(path: Path, payload: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(temporary, path)


def _prepare_split(
    source: datasets.Dataset,
    work_dir: Path,
    *,
    split: str,
    size: int,
    num_proc: int | None,
    chunk_size: int,
    request_hash: str,
) -> datasets.Dataset:
    work_dir.mkdir(parents=True, exist_ok=True)
    features = source.features
    undecoded = source.cast_column("image", datasets.Image(decode=False))
    chunks = []
    for index, start in enumerate(range(0, len(source), chunk_size)):
        stem = f"chunk-{index:05d}"
        marker = work_dir / f"{stem}.json"
        if marker.is_file():
            done = json.loads(marker.read_text())
            chunks.append(datasets.concatenate_datasets([datasets.Dataset.from_file(str(work_dir / f)) for f in done]))
            continue
        for leftover in _chunk_files(work_dir, stem):  # an interrupted attempt at this chunk
            leftover.unlink()
        rows = undecoded.select(range(start, min(start + chunk_size, len(source))))
        mapped = rows.map(
            _encode_batch,
            batched=True,
            with_rank=True,
            batch_size=16,
            fn_kwargs={"size": size},
            features=features,
            num_proc=min(num_proc, len(rows)) if num_proc and num_proc > 1 else None,
            cache_file_name=str(work_dir / f"{stem}.arrow"),
            load_from_cache_file=False,
            new_fingerprint=hashlib.sha256(f"{request_hash}:{split}:{index}".encode()).hexdigest()[:16],
            desc=f"prepare {split} {start}-{start + len(rows)}",
        )
        _atomic_write_json(marker, [Path(f["filename"]).name for f in mapped.cache_files])
        chunks.append(mapped)
    if not chunks:
        return source.select([])
    return datasets.concatenate_datasets(chunks)


def prepare_corpus(
    name: str,
    data_dir: str | Path,
    output_dir: str | Path,
    *,
    size: int = 256,
    num_proc: int | None = None,
    cache_dir: str | Path | None = None,
    chunk_size: int = 4096,
    **options,
) -> Path:
    """Decode, resize (short side `size`) and store corpus `name` from `data_dir` in `output_dir`; return it.

    `options` are the corpus options of `load_cxr_dataset`; `num_proc` processes share the decoding. Rerunning an
    interrupted call with the same arguments resumes it (completed chunks of `chunk_size` images are kept);
    rerunning a completed one returns at once.

    Raises:
        CorpusError: the corpus fails validation, an image cannot be read, or `output_dir` holds something else
            (another prepared corpus, or files that are not an interrupted preparation).
    """
    if size < 1:
        raise CorpusError(f"size={size}: expected a positive number of pixels for the short side")
    if chunk_size < 1:
        raise CorpusError(f"chunk_size={chunk_size}: expected a positive number of images")
    # `hf` corpora name their source by option: nothing under a data_dir to read.
    data_dir, output_dir = (None if data_dir is None else Path(data_dir).absolute()), Path(output_dir).absolute()
    if data_dir is not None and (data_dir / MANIFEST_NAME).is_file():
        raise CorpusError(f"{data_dir} is already a prepared corpus; prepare from the corpus as distributed")
    resolved = config_options(name, options)
    request = {
        "corpus": name,
        "options": resolved,
        "size": size,
        "source_data_dir": None if data_dir is None else str(data_dir),
        "metadata_fingerprint": (
            metadata_fingerprint(data_dir, builder_class(name).FINGERPRINT_SUFFIXES)
            if data_dir is not None and data_dir.is_dir()
            else None
        ),
        "builder_version": builder_version(name),
        "storage": STORAGE,
    }

    partial = output_dir / _PARTIAL_DIR
    if (output_dir / MANIFEST_NAME).is_file():
        manifest = read_manifest(output_dir)
        if {key: manifest.get(key) for key in request} == request:
            shutil.rmtree(partial, ignore_errors=True)
            return output_dir
        differ = ", ".join(
            f"{key} {manifest.get(key)!r} there, {value!r} now"
            for key, value in request.items()
            if manifest.get(key) != value
        )
        raise CorpusError(
            f"{output_dir} already holds a prepared corpus made with other settings ({differ}); choose another "
            "output directory or delete it"
        )
    if output_dir.exists() and any(path.name != _PARTIAL_DIR for path in output_dir.iterdir()) and not partial.is_dir():
        raise CorpusError(f"{output_dir} is not empty; prepare into a new or empty directory")

    source = load_cxr_dataset(name, data_dir, cache_dir=cache_dir, num_proc=num_proc, **options)
    if partial.is_dir():
        try:
            previous = json.loads((partial / _REQUEST_FILE).read_text())
        except (OSError, ValueError):
            previous = None
        if previous != {**request, "chunk_size": chunk_size}:  # another request's chunks are not ours to reuse
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    _atomic_write_json(partial / _REQUEST_FILE, {**request, "chunk_size": chunk_size})
    request_hash = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    prepared = datasets.DatasetDict(
        {
            split: _prepare_split(
                source[split],
                partial / split,
                split=split,
                size=size,
                num_proc=num_proc,
                chunk_size=chunk_size,
                request_hash=request_hash,
            )
            for split in source
        }
    )

    # Remove what an attempt interrupted during the final write left behind, then write; the manifest comes last.
    for path in output_dir.iterdir():
        if path.is_dir() and path.name != _PARTIAL_DIR:
            shutil.rmtree(path)
        elif not path.is_dir():
            path.unlink()
    prepared.save_to_disk(str(output_dir))
    if data_dir is not None and (data_dir / PHANTOM_RECORD).is_file():  # a prepared copy of phantoms is still phantoms
        shutil.copyfile(data_dir / PHANTOM_RECORD, output_dir / PHANTOM_RECORD)
    manifest = {
        "format": "cxr-vitmae prepared corpus",
        "format_version": FORMAT_VERSION,
        **request,
        "splits": {split: len(dataset) for split, dataset in prepared.items()},
        # What `label_names` needs when the labels come from the data (a table's class column), which is not here.
        "label_names": label_names(name, data_dir, **options),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _atomic_write_json(output_dir / MANIFEST_NAME, manifest)
    shutil.rmtree(partial, ignore_errors=True)
    return output_dir


__all__ = ["MANIFEST_NAME", "STORAGE", "prepare_corpus"]
