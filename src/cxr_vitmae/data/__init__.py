"""Chest X-ray corpora as `datasets` builders, read exactly as they are distributed.

`load_cxr_dataset(name, data_dir, **options)` builds (and caches) a `datasets.DatasetDict`;
`label_names(name, **options)` gives the label order of its `labels` vectors. Options are the explicit fields of each
corpus's `BuilderConfig` (views, uncertainty policy, version, ...).
"""

import hashlib
import importlib
from dataclasses import fields
from pathlib import Path

import datasets

from .errors import CorpusError

# name -> (module, builder class); imported on first use so `import cxr_vitmae.data` stays cheap.
CORPORA = {
    "nih-chestxray14": ("nih", "NIHChestXray14"),
    "chexpert": ("chexpert", "CheXpert"),
    "mimic-cxr": ("mimic", "MIMICCXR"),
    "covidx": ("covidx", "COVIDx"),
    "pretrain-0.3m": ("pretrain", "Pretrain03M"),
    "pretrain-0.5m": ("pretrain", "Pretrain05M"),
}


def builder_class(name: str) -> type[datasets.GeneratorBasedBuilder]:
    if name not in CORPORA:
        raise CorpusError(f"Unknown corpus {name!r}; expected one of {', '.join(CORPORA)}")
    module, class_name = CORPORA[name]
    return getattr(importlib.import_module(f".{module}", __name__), class_name)


def _check_options(cls: type[datasets.GeneratorBasedBuilder], name: str, options: dict) -> None:
    allowed = {f.name for f in fields(cls.BUILDER_CONFIG_CLASS)} - {"name", "version", "data_dir", "data_files", "description"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise CorpusError(f"{name} has no option {', '.join(unknown)}; its options are {', '.join(sorted(allowed))}")


def metadata_fingerprint(data_dir: str | Path) -> str:
    """A hash of the corpus's metadata files (name, size, modification time), so that a cache built from other
    metadata is never reused: datasets keys its cache on the options, not on the files."""
    digest = hashlib.sha256()
    for path in sorted(Path(data_dir).rglob("*")):
        if path.suffix in {".csv", ".txt", ".gz"} and path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(data_dir)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def load_cxr_dataset(
    name: str,
    data_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    **options,
) -> datasets.DatasetDict:
    """The splits of corpus `name` read from `data_dir` (its distributed layout), with the given options."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CorpusError(f"{data_dir}: no such directory (expected the {name} corpus as distributed)")
    cls = builder_class(name)
    _check_options(cls, name, options)
    builder = cls(
        data_dir=str(data_dir),
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        dataset_name=name.replace(".", "_"),
        hash=metadata_fingerprint(data_dir),
        **options,
    )
    builder.download_and_prepare(num_proc=num_proc)
    return builder.as_dataset()


def label_names(name: str, **options) -> list[str]:
    """The order of the `labels` vector of corpus `name` under `options` (empty for pre-training unions)."""
    cls = builder_class(name)
    _check_options(cls, name, options)
    return list(cls.label_names(**options))


__all__ = ["CORPORA", "CorpusError", "builder_class", "label_names", "load_cxr_dataset", "metadata_fingerprint"]
