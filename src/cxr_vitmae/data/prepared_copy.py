"""Reading a corpus that `cxr-vitmae prepare` (prepare.py) wrote: its manifest, and the check that it is the corpus
and options asked for, so `load_cxr_dataset` can return the prepared copy in place of the corpus as distributed."""

import json
from pathlib import Path
from typing import Any

import datasets

from .corpora import builder_class, config_options
from .errors import CorpusError

MANIFEST_NAME = "cxr_vitmae_prepared.json"
FORMAT_VERSION = 1


def builder_version(name: str) -> str:
    """The version of corpus `name`'s builder, recorded so a copy prepared by another version is not reused."""
    return str(getattr(builder_class(name), "VERSION", None))


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest `prepare_corpus` writes last into a prepared directory; CorpusError if unreadable or foreign."""
    path = directory / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: cannot be read as a prepared-corpus manifest ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise CorpusError(
            f"{path}: expected a cxr-vitmae prepared-corpus manifest with format_version {FORMAT_VERSION}, found "
            f"{manifest.get('format_version') if isinstance(manifest, dict) else manifest!r}; prepare the corpus again"
        )
    return manifest


def _mismatches(manifest: dict[str, Any], name: str, options: dict[str, Any]) -> list[str]:
    if manifest.get("corpus") != name:
        return [f"it holds the {manifest.get('corpus')!r} corpus, not {name!r}"]
    prepared = manifest.get("options", {})
    problems = [
        f"option {key}={prepared.get(key)!r} when prepared, {options.get(key)!r} requested"
        for key in sorted(set(prepared) | set(options))
        if prepared.get(key) != options.get(key)
    ]
    if manifest.get("builder_version") != builder_version(name):
        problems.append(
            f"it was built by {name} builder version {manifest.get('builder_version')}, the installed one is "
            f"{builder_version(name)}"
        )
    return problems


def load_prepared(name: str, prepared_dir: str | Path, **options) -> datasets.DatasetDict:
    """The DatasetDict that `prepare_corpus` wrote to `prepared_dir`, if it is corpus `name` under `options`.

    Raises:
        CorpusError: the directory holds another corpus, was prepared with other options or by another builder
            version, or is incomplete.
    """
    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    problems = _mismatches(manifest, name, config_options(name, options))
    if problems:
        raise CorpusError(
            f"{prepared_dir} is a prepared corpus that does not match this request: {'; '.join(problems)}. Load it "
            f"with the options it was prepared with (see {MANIFEST_NAME}), or prepare the corpus again with these "
            "options into another directory."
        )
    try:
        dataset = datasets.load_from_disk(str(prepared_dir))
    except (OSError, ValueError) as error:
        raise CorpusError(f"{prepared_dir}: the prepared corpus cannot be read ({error}); prepare it again") from error
    sizes = {split: len(dataset[split]) for split in dataset}
    if sizes != manifest.get("splits"):
        raise CorpusError(
            f"{prepared_dir}: split sizes {sizes} differ from those in {MANIFEST_NAME} {manifest.get('splits')}; "
            "the directory was modified after preparation, prepare it again"
        )
    return dataset


__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "builder_version", "load_prepared", "read_manifest"]
