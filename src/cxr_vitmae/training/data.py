"""Data loading for the recipes, with every random choice a function of (seed, epoch, example), so that a resumed
run sees exactly the batches and augmentations an uninterrupted one would have seen, with any number of workers.

The sampler hands each worker (epoch, index) pairs rather than indices, so the epoch reaches workers that persist
across epochs (each worker holds its own copy of the corpus, which `set_epoch` in the main process cannot reach)."""

import hashlib
import os
import random
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..data.device_augmentation import BatchedResizedCrop, collate_pixels, split_for_device
from ..data.dicom_images import decoded_dicom_cell
from ..data.errors import CorpusError
from ..data.transforms import collate_radiographs
from ..models.image_processing_cxr import RadiographReadError
from .arguments import RecipeArguments

# The entropy word that tells the shuffle's seed apart from every example's seed (example indices are >= 0).
_SHUFFLE = 2**32 - 1


def _example_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed that differs for every (seed, epoch, index): a keyed hash, 0.6 µs where numpy's SeedSequence
    took 7 (it is paid once per image)."""
    digest = hashlib.blake2b(struct.pack("<qqq", seed, epoch, index), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _decodes_images(feature: Any) -> bool:
    return isinstance(feature, datasets.Image) and feature.decode


class TransformedCorpus(Dataset):
    """Rows of a `datasets.Dataset` as {"pixel_values", "labels", "index"}; the transform's randomness (torch, Python
    `random` as timm's RandAugment uses, numpy) is seeded per example and epoch, and the process's own generators
    are left as they were (dropout, drop path and MAE masking keep their own stream).

    A transform that returns a mapping (`CropDraws`: undecoded pixels and the crop to apply on the device) has its
    entries put in the example instead of "pixel_values". Items are indices (at the corpus's `epoch`) or
    (epoch, index) pairs, as `EpochSampler` yields them."""

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

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[int | tuple[int, int]]) -> list[dict[str, Any]]:
        """The examples at `items`, as a DataLoader fetches a batch: the rows are read in one `datasets` query and
        the process's generators saved and restored once per batch: a prepared fine-tuning image at batch 64 cost
        1.39 ms on one core read row by row and 1.12 ms read in one query, of which the transform is 0.98."""
        epochs = [int(item[0]) if isinstance(item, (tuple, list)) else self.epoch for item in items]
        indices = [int(item[1]) if isinstance(item, (tuple, list)) else int(item) for item in items]
        rows = self._rows[indices]
        # A transform may take the undecoded cell (`decodes_cells`) and say which generators it draws from.
        takes_cells = getattr(self.transform, "decodes_cells", False)
        sources = getattr(self.transform, "random_sources", ("torch", "python", "numpy"))
        examples = []
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                for position, (epoch, index) in enumerate(zip(epochs, indices, strict=True)):
                    seed = _example_seed(self.seed, epoch, index)
                    # The CPU generator only, which is what transforms draw from: `torch.manual_seed` would also
                    # reseed every accelerator's generator (outside what fork_rng restores) and, before CUDA is
                    # initialised, record the call with a formatted stack trace three times over, which cost more
                    # than half a millisecond per image.
                    torch.random.default_generator.manual_seed(seed)
                    if "python" in sources:
                        random.seed(seed)
                    if "numpy" in sources:
                        np.random.seed(seed % 2**32)
                    image = rows["image"][position]
                    # datasets decodes with PIL, which reads no DICOM: those cells are read here, as arrays.
                    radiograph = self._dicom(image, index) if self._decode_image is not None else None
                    if radiograph is not None:
                        transformed = self.transform(radiograph)
                    elif takes_cells and self._decode_image is not None:
                        transformed = self._transformed_cell(image, index)
                    else:
                        if self._decode_image is not None:
                            image = self._decoded(image, index)
                        transformed = self.transform(image)
                    example = dict(transformed) if isinstance(transformed, Mapping) else {"pixel_values": transformed}
                    example["index"] = index
                    if self.label_key is not None:
                        example["labels"] = torch.as_tensor(rows[self.label_key][position])
                    examples.append(example)
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)
        return examples

    def _dicom(self, cell: dict, index: int) -> np.ndarray | None:
        try:
            return decoded_dicom_cell(cell)
        except RadiographReadError as error:
            raise _undecodable(cell, index, error) from error

    def _decoded(self, cell: dict, index: int) -> Any:
        # The builders check every file at load time (header, and that a PNG or JPEG is complete), but a file
        # damaged inside would only fail here: say which one.
        try:
            return self._decode_image(cell)
        except (OSError, SyntaxError, ValueError) as error:
            raise _undecodable(cell, index, error) from error

    def _transformed_cell(self, cell: dict, index: int) -> Any:
        try:
            return self.transform(cell)
        except (OSError, SyntaxError, ValueError) as error:
            raise _undecodable(cell, index, error) from error


def _undecodable(cell: dict, index: int, error: Exception) -> CorpusError:
    source = cell.get("path") or "its stored bytes"
    return CorpusError(f"example {index}: the image {source} cannot be decoded ({error})")


class EpochSampler(Sampler[tuple[int, int]]):
    """All indices once per epoch as (epoch, index) pairs, shuffled by a generator seeded with (seed, epoch) — never
    the global one."""

    def __init__(self, length: int, *, seed: int, shuffle: bool):
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if not self.shuffle:
            order = range(self.length)
        else:
            generator = torch.Generator().manual_seed(_example_seed(self.seed, self.epoch, _SHUFFLE))
            order = torch.randperm(self.length, generator=generator).tolist()
        return ((self.epoch, index) for index in order)


def collate_examples(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`collate_radiographs`, and for examples bound for device augmentation (`CropDraws`), their "pixels"
    zero-padded to the batch's largest image."""
    if rows and "pixels" in rows[0]:
        drawn = ("pixels", "crop", "flip")
        batch = default_collate([{key: value for key, value in row.items() if key not in drawn} for row in rows])
        return {
            **batch,
            "pixels": collate_pixels([row["pixels"] for row in rows]),
            "crop": torch.tensor([row["crop"] for row in rows], dtype=torch.int64),
            "flip": torch.tensor([row["flip"] for row in rows], dtype=torch.bool),
        }
    return collate_radiographs(rows)


def default_num_workers(device: torch.device | str) -> int:
    """Loader workers for one training process. Training on a GPU: the cores this process may use (its share of
    the affinity mask among the processes `accelerate launch` started on this machine), less one for the training
    loop itself, at most 8. Training on the CPU: none, because the model's threads already use every core and a
    worker beside them oversubscribes them (`cpu-1-worker` against `cpu-inline` in benchmarks/RESULTS.md)."""
    if torch.device(device).type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, cores // max(1, processes_here) - 1))


def place_augmentation(
    transform: Callable[[Any], torch.Tensor], augment_on: str, device: torch.device | str
) -> tuple[Callable[[Any], Any], BatchedResizedCrop | None, str]:
    """(the loader's transform, the device's batch transform or None, where the augmentation runs) for a recipe's
    `--augment_on`: "cpu" keeps `transform` whole in the loader; "accelerator" splits it with `split_for_device`
    (an error if it cannot be split); "auto" splits it when it can, except on a CPU `device` for timm's crop
    (fine-tuning without RandAugment), whose emulation of PIL's two rounded 8-bit passes costs a CPU no less than
    PIL itself (the demo's fine-tuning: 0.895 of the bare step split, 1.049 not, benchmarks/RESULTS.md). Split,
    torchvision's crop (pre-training) is the cheaper path on a CPU too (0.966 against 0.886)."""
    if augment_on not in ("auto", "cpu", "accelerator"):
        raise ValueError(f"augment_on={augment_on!r}: expected auto, cpu or accelerator")
    if augment_on == "cpu":
        return transform, None, "cpu"
    try:
        draws, on_device = split_for_device(transform)
    except ValueError as error:
        if augment_on == "accelerator":
            raise ValueError(f"--augment_on accelerator: {error}") from None
        return transform, None, "cpu"
    if augment_on == "auto" and on_device.eight_bit_passes and torch.device(device).type == "cpu":
        return transform, None, "cpu"
    return draws, on_device, "accelerator"


def make_loader(
    corpus: TransformedCorpus,
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    drop_last: bool = False,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader over `corpus` that draws nothing from the global random generators (its own generator seeds the
    workers), so creating it mid-run cannot shift dropout or masking randomness. With `persistent_workers` the
    workers live across epochs (the epoch travels with each index); memory is pinned when CUDA is present, so that
    the copy to the GPU can overlap the step."""
    return DataLoader(
        corpus,
        batch_size=batch_size,
        sampler=EpochSampler(len(corpus), seed=corpus.seed, shuffle=shuffle),
        num_workers=num_workers,
        collate_fn=collate_examples,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=persistent_workers and num_workers > 0,
        generator=torch.Generator().manual_seed(corpus.seed),
    )


def make_train_loader(
    args: RecipeArguments,
    accelerator: Accelerator,
    split: datasets.Dataset,
    augmentation: Callable[[Any], torch.Tensor],
    label_key: str | None,
) -> tuple[DataLoader, BatchedResizedCrop | None]:
    """The shuffled training loader over `split` and the device half of `augmentation` (None when it all runs in
    the loader): `--augment_on` decides where the crop and flip run, and `args` records what was chosen
    (`augment_on`, `dataloader_num_workers`, whose default depends on the device) for training_args.json."""
    loader_transform, device_transform, args.augment_on = place_augmentation(
        augmentation, args.augment_on, accelerator.device
    )
    if args.dataloader_num_workers is None:
        args.dataloader_num_workers = default_num_workers(accelerator.device)
    corpus = TransformedCorpus(split, loader_transform, seed=args.seed, label_key=label_key)
    loader = make_loader(
        corpus,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        num_workers=args.dataloader_num_workers,
        drop_last=True,
        persistent_workers=True,
    )
    return loader, device_transform
