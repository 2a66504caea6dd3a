"""Chest X-ray corpora as `datasets` builders, read exactly as they are distributed.

`load_cxr_dataset(name, data_dir, **options)` builds (and caches) a `datasets.DatasetDict`;
`label_names(name, **options)` gives the label order of its `labels` vectors. Options are the explicit fields of each
corpus's `BuilderConfig` (views, uncertainty policy, version, ...).
"""

import hashlib
from pathlib import Path

import datasets

from .builder import CorpusBuilder
from .corpora import CORPORA, Corpus, builder_class, config_options, corpus, corpus_options, uses_own_data
from .errors import CorpusError
from .prepared_copy import MANIFEST_NAME, load_prepared, read_manifest
from .validation import check_cached_images


def metadata_fingerprint(data_dir: str | Path, suffixes: tuple[str, ...] = CorpusBuilder.FINGERPRINT_SUFFIXES) -> str:
    """A hash of the corpus's metadata files (name, size, modification time of the files with `suffixes`), so that
    a cache built from other metadata is never reused: datasets keys its cache on the options, not on the files."""
    digest = hashlib.sha256()
    for path in sorted(Path(data_dir).rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(data_dir)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def load_cxr_dataset(
    name: str,
    data_dir: str | Path | None,
    *,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    **options,
) -> datasets.DatasetDict:
    """The splits of corpus `name` read from `data_dir` (its distributed layout), with the given options.

    When `data_dir` is a directory written by `prepare_corpus` (`cxr-vitmae prepare`), its resized copy is returned
    instead, provided it was prepared from corpus `name` with the same options (else CorpusError). A corpus found by
    its options (`hf`: `path` names a Hub dataset or a folder) takes `data_dir=None`."""
    cls = builder_class(name)
    if data_dir is None and not cls.NEEDS_DATA_DIR:
        options = corpus_options(name, options)
        # Nothing under a data_dir to fingerprint: the cache is keyed on the source dataset itself (its fingerprints,
        # which change with its files or its Hub commit), so a changed source is rebuilt.
        fingerprint, where = cls.source_fingerprint(**options), f"{name} {options}"
    else:
        if data_dir is None:
            raise CorpusError(f"{name} needs data_dir: the folder holding the corpus as distributed")
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise CorpusError(f"{data_dir}: no such directory (expected the {name} corpus as distributed)")
        options = corpus_options(name, options)
        if (data_dir / MANIFEST_NAME).is_file():
            # Written by `cxr-vitmae prepare`: the resized images are already in Arrow, there is nothing to build.
            return load_prepared(name, data_dir, **options)
        if not cls.NEEDS_DATA_DIR:
            raise CorpusError(f"{data_dir}: {name} reads the dataset its options name; data_dir is for a prepared copy")
        fingerprint, where = metadata_fingerprint(data_dir, cls.FINGERPRINT_SUFFIXES), f"{name} in {data_dir}"
    builder = cls(
        data_dir=None if data_dir is None else str(data_dir),
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        dataset_name=name.replace(".", "_"),
        hash=fingerprint,
        **options,
    )
    cached = (Path(builder.cache_dir) / datasets.config.DATASET_INFO_FILENAME).is_file()
    builder.download_and_prepare(num_proc=num_proc)
    splits = builder.as_dataset()
    if cached:  # a fresh build has just checked every image
        check_cached_images(splits, where)
    return splits


def label_names(name: str, data_dir: str | Path | None = None, **options) -> list[str]:
    """The order of the `labels` vector of corpus `name` under `options` (empty for unlabelled corpora). `data_dir`
    is read only by corpora whose labels come from the data (a `csv` table's class column without `class_names`)."""
    options = corpus_options(name, options)
    if data_dir is not None and (Path(data_dir) / MANIFEST_NAME).is_file():
        load_prepared(name, data_dir, **options)  # the copy is of this corpus under these options
        recorded = read_manifest(Path(data_dir)).get("label_names")
        if recorded is not None:
            return list(recorded)
    return list(builder_class(name).label_names(data_dir, **options))


def synthetic_corpus(name: str, data_dir: str | Path | None, **options) -> dict | None:
    """What `cxr-vitmae phantoms` recorded about the corpus in `data_dir` (for a pre-training union, about its
    parts), or `None` when it holds no phantoms. Runs copy it into training_args.json and metrics.json, so that a
    model card never presents results on phantoms as results on the corpus whose format they borrow."""
    # Here, not at the top: the phantoms package imports every corpus builder, which `import cxr_vitmae.data` otherwise
    # loads only on first use (see `builder_class`).
    from .phantoms import phantom_record

    record = phantom_record(data_dir)
    cls = builder_class(name)
    if record is None and data_dir is not None:
        record = cls.phantom_record(data_dir, **corpus_options(name, options))
    return record


def split_sources(name: str, data_dir: str | Path | None = None, **options) -> dict[str, str]:
    """Split -> what it is read from, for every split of corpus `name` under `options` (e.g. CheXpert's default
    `test` is "valid.csv, the paper's CheXpert evaluation set"), for metrics.json and model cards. `data_dir` lets a
    corpus name its own files (a `csv` corpus's table)."""
    if data_dir is not None and (Path(data_dir) / MANIFEST_NAME).is_file():
        # A prepared copy: the files a split is named after are in the corpus it was prepared from.
        source = read_manifest(Path(data_dir))["source_data_dir"]
        data_dir = source if source is not None and Path(source).is_dir() else None
    config = builder_class(name).BUILDER_CONFIG_CLASS(
        data_dir=None if data_dir is None else str(data_dir), **corpus_options(name, options)
    )
    return config.split_sources()


def split_source(name: str, split: str, data_dir: str | Path | None = None, **options) -> str:
    """What split `split` of corpus `name` is read from (`split_sources`)."""
    sources = split_sources(name, data_dir, **options)
    if split not in sources:
        raise CorpusError(f"{name} has no {split!r} split under these options; it has {', '.join(sources)}")
    return sources[split]


__all__ = [
    "CORPORA",
    "Corpus",
    "CorpusError",
    "builder_class",
    "config_options",
    "corpus",
    "corpus_options",
    "label_names",
    "load_cxr_dataset",
    "metadata_fingerprint",
    "split_source",
    "split_sources",
    "synthetic_corpus",
    "uses_own_data",
]
