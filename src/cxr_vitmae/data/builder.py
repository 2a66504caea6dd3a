"""The protocol every corpus builder follows, so that the registry, the recipes and the cards call it by name.

A corpus is one `CorpusBuilder` subclass (a `datasets.GeneratorBasedBuilder`) with a `CorpusConfig` subclass as its
`BUILDER_CONFIG_CLASS`, plus one `Corpus` entry in `corpora.py`. The builder says:

- `label_names(data_dir=None, **options)`: the order of the `labels` vector (empty for unlabelled corpora); only
  corpora whose labels come from the data itself (a table's class column) read `data_dir`;
- `OPTION_ALIASES`: option spellings that cannot be config field names (COVIDx's `version`);
- `FINGERPRINT_SUFFIXES`: which files under `data_dir` key its cache;
- `NEEDS_DATA_DIR`: False for a corpus read from elsewhere (`hf`: a Hub repository or a folder named by an option),
  which `load_cxr_dataset` then builds without `data_dir`, its cache keyed on `source_fingerprint(**options)`;
- `phantom_record(data_dir, **options)`: what `cxr-vitmae phantoms` recorded when the corpus is made of phantoms it
  cannot find by looking in `data_dir` itself (the unions look in their parts' folders);

and its config says `split_sources()`: split → what it is read from, as metrics.json and model cards state it.
"""

from pathlib import Path
from typing import ClassVar

import datasets

from .errors import CorpusError
from .schema import ImageRecord


class CorpusConfig(datasets.BuilderConfig):
    """A corpus's options (its dataclass fields beyond `datasets.BuilderConfig`'s own)."""

    def split_sources(self) -> dict[str, str]:
        """Split → what it is read from, in words (recorded in metrics.json and model cards)."""
        raise NotImplementedError


class CorpusBuilder(datasets.GeneratorBasedBuilder):
    """A cxr-vitmae corpus as a `datasets` builder (module docstring for the protocol)."""

    BUILDER_CONFIG_CLASS: type[CorpusConfig]
    OPTION_ALIASES: ClassVar[dict[str, str]] = {}
    # The files under data_dir whose name, size and time key the cache (`metadata_fingerprint`): the corpus's
    # metadata; a corpus defined by the images themselves (`folder`) adds theirs.
    FINGERPRINT_SUFFIXES: ClassVar[tuple[str, ...]] = (".csv", ".tsv", ".parquet", ".txt", ".gz")
    # False where the corpus is found by its options instead (module docstring).
    NEEDS_DATA_DIR: ClassVar[bool] = True

    @classmethod
    def label_names(cls, data_dir: str | Path | None = None, **options) -> list[str]:
        raise NotImplementedError

    @classmethod
    def phantom_record(cls, data_dir: str | Path, **options) -> dict | None:
        return None


class RecordCorpusBuilder(CorpusBuilder):
    """A corpus whose reader gives `{split: [ImageRecord]}`: the split and example generators the single-reader
    corpora (CheXpert, MIMIC-CXR, COVIDx, a user's table or folder) share; subclasses say how their corpus is read
    (`read_records`)."""

    def read_records(self) -> dict[str, list[ImageRecord]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        if not self.config.data_dir:
            raise CorpusError(f"{self.dataset_name} needs data_dir: the folder holding the corpus")
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"records": records})
            for split, records in self.read_records().items()
        ]

    def _generate_examples(self, records: list[ImageRecord]):
        for record in records:
            yield record.image_id, record.example()


__all__ = ["CorpusBuilder", "CorpusConfig", "RecordCorpusBuilder"]
