"""Data loading for the recipes, with every random choice a function of (seed, epoch, example), so that a resumed
run sees exactly the batches and augmentations an uninterrupted one would have seen, with any number of workers."""

import random
from collections.abc import Callable, Iterator
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.errors import CorpusError
from ..data.transforms import collate_radiographs

# The entropy word that tells the shuffle's seed apart from every example's seed (example indices are >= 0).
_SHUFFLE = 2**32 - 1


def _example_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def _decodes_images(feature: Any) -> bool:
    return isinstance(feature, datasets.Image) and feature.decode


class TransformedCorpus(Dataset):
    """Rows of a `datasets.Dataset` as {"pixel_values", "labels", "index"}; the transform's randomness (torch, Python
    `random` as timm's RandAugment uses, numpy) is seeded per example and epoch, and the process's own generators
    are left as they were (dropout, drop path and MAE masking keep their own stream)."""

    def __init__(
        self,
        dataset: datasets.Dataset,
        transform: Callable[[Any], torch.Tensor],
        *,
        seed: int,
        label_key: str | None = "labels",
    ):
        self.dataset = dataset
        # Rows are read a batch at a time (one `datasets` query) but each image is decoded just before its own
        # transform, so a worker holds one decoded image rather than a batch of them: 128 full-size MIMIC-CXR JPEGs
        # are about a gigabyte decoded.
        image_feature = dataset.features.get("image")
        self._decode_image = image_feature.decode_example if _decodes_images(image_feature) else None
        self._rows = dataset.cast_column("image", datasets.Image(decode=False)) if self._decode_image else dataset
        self.transform = transform
        self.seed = seed
        self.label_key = label_key
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """The examples at `indices`, as a DataLoader fetches a batch: the rows are read in one `datasets` query and
        the process's generators saved and restored once per batch: a prepared fine-tuning image at batch 64 cost
        1.39 ms on one core read row by row and 1.12 ms read in one query, of which the transform is 0.98."""
        indices = [int(index) for index in indices]
        rows = self._rows[indices]
        examples = []
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                for position, index in enumerate(indices):
                    seed = _example_seed(self.seed, self.epoch, index)
                    # The CPU generator only, which is what transforms draw from: `torch.manual_seed` would also
                    # reseed every accelerator's generator (outside what fork_rng restores) and, before CUDA is
                    # initialised, record the call with a formatted stack trace three times over, which cost more
                    # than half a millisecond per image.
                    torch.random.default_generator.manual_seed(seed)
                    random.seed(seed)
                    np.random.seed(seed % 2**32)
                    image = rows["image"][position]
                    if self._decode_image is not None:
                        image = self._decoded(image, index)
                    example = {"pixel_values": self.transform(image), "index": index}
                    if self.label_key is not None:
                        example["labels"] = torch.as_tensor(rows[self.label_key][position])
                    examples.append(example)
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)
        return examples

    def _decoded(self, cell: dict, index: int) -> Any:
        # The builders check every file at load time (header, and that a PNG or JPEG is complete), but a file
        # damaged inside would only fail here: say which one.
        try:
            return self._decode_image(cell)
        except (OSError, SyntaxError, ValueError) as error:
            source = cell.get("path") or "its stored bytes"
            raise CorpusError(f"example {index}: the image {source} cannot be decoded ({error})") from error


class EpochSampler(Sampler[int]):
    """All indices once per epoch, shuffled by a generator seeded with (seed, epoch) — never the global one."""

    def __init__(self, length: int, *, seed: int, shuffle: bool):
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator().manual_seed(_example_seed(self.seed, self.epoch, _SHUFFLE))
        return iter(torch.randperm(self.length, generator=generator).tolist())


def make_loader(
    corpus: TransformedCorpus, *, batch_size: int, shuffle: bool, num_workers: int, drop_last: bool = False
) -> DataLoader:
    """A DataLoader over `corpus` that draws nothing from the global random generators (its own generator seeds the
    workers), so creating it mid-run cannot shift dropout or masking randomness. Workers are not persistent: each
    epoch's workers start from the corpus with its current epoch."""
    return DataLoader(
        corpus,
        batch_size=batch_size,
        sampler=EpochSampler(len(corpus), seed=corpus.seed, shuffle=shuffle),
        num_workers=num_workers,
        collate_fn=collate_radiographs,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(corpus.seed),
    )
