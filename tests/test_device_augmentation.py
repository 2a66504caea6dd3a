"""Augmentation on the training device: the same draws as the CPU transform, the same crops within interpolation
error, through the recipes' corpus, collate and (persistent, multi-worker) loader."""

import io
import random

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from cxr_vitmae.data.device_augmentation import BatchedResizedCrop, collate_pixels, split_for_device
from cxr_vitmae.data.transforms import finetuning_transform, pretraining_transform
from cxr_vitmae.training.data import TransformedCorpus, make_loader, place_augmentation

SIZES = [(96, 96), (70, 110), (160, 120), (48, 48), (64, 200)]


def radiograph_like(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth structure with sharp edges, in [0, 1]: what a resampling kernel's errors show on."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(0, 1, (height, width)), 3)
    field = (field - field.min()) / (field.max() - field.min())
    field[height // 3 : height // 2, width // 4 : width // 2] = 1.0
    return field


def eight_bit(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray((radiograph_like(height, width, seed) * 255).round().astype(np.uint8), "L")


def sixteen_bit_png(height: int, width: int, seed: int) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray((radiograph_like(height, width, seed) * 65535).round().astype(np.uint16)).save(buffer, "PNG")
    return Image.open(io.BytesIO(buffer.getvalue()))


def both_paths(transform, images: list, seed: int, kernel: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    draws, on_device = split_for_device(transform)
    on_device.kernel = kernel
    cpu, drawn = [], []
    for offset, image in enumerate(images):
        for store, function in ((cpu, transform), (drawn, draws)):
            torch.manual_seed(seed + offset)
            random.seed(seed + offset)
            store.append(function(image))
    batch = {
        "pixels": collate_pixels([row["pixels"] for row in drawn]),
        "crop": torch.tensor([row["crop"] for row in drawn]),
        "flip": torch.tensor([row["flip"] for row in drawn]),
    }
    return torch.stack(cpu), on_device(batch)["pixel_values"]


# "dense" is what runs on a GPU (the batched products), "banded" what runs on a CPU device.
@pytest.mark.parametrize("kernel", ["dense", "banded"])
@pytest.mark.parametrize("make_image", [eight_bit, sixteen_bit_png], ids=["8-bit", "16-bit"])
def test_pretraining_crops_equal_torchvision_on_the_same_draws(make_image, kernel):
    images = [make_image(h, w, seed) for seed, (h, w) in enumerate(SIZES)]
    std = pretraining_transform(40).augment.transforms[-1].std[0]
    for seed in range(0, 400, 20):
        cpu, device = both_paths(pretraining_transform(40, scale=(0.2, 1.0)), images, seed, kernel)
        assert cpu.shape == device.shape == (len(SIZES), 3, 40, 40)
        # float32 rounding of sums over up to 5x5-wider kernels, in units of the [0, 1] image (1/255 = 4e-3)
        assert (cpu - device).abs().max().item() * std < 1e-5


@pytest.mark.parametrize("kernel", ["dense", "banded"])
def test_finetuning_crops_equal_timm_within_its_8_bit_rounding(kernel):
    images = [eight_bit(h, w, seed) for seed, (h, w) in enumerate(SIZES)]
    transform = finetuning_transform(40, auto_augment=None, scale=(0.08, 1.0))
    std = transform.augment.transforms[-1].std[0]
    errors = []
    for seed in range(0, 400, 20):
        cpu, device = both_paths(transform, images, seed, kernel)
        errors.append((cpu - device).abs().max().item() * std)
    # PIL resamples with fixed-point weights and rounds its output to 8 bits.
    assert max(errors) < 1.5 / 255
    assert max(errors) > 0  # the comparison sees two different kernels, not one path twice


@pytest.mark.parametrize("kernel", ["dense", "banded"])
def test_flip_and_padding_do_not_leak_between_images(kernel):
    # One constant image beside a larger one: padding (zero) must get no weight, so the crop stays constant.
    small = Image.fromarray(np.full((30, 20), 200, np.uint8), "L")
    large = eight_bit(90, 90, 0)
    _, device = both_paths(pretraining_transform(16, scale=(0.5, 1.0)), [small, large], seed=5, kernel=kernel)
    normalize = pretraining_transform(16).augment.transforms[-1]
    mean, std = normalize.mean[0], normalize.std[0]
    assert torch.allclose(device[0] * std + mean, torch.full_like(device[0], 200 / 255), atol=1e-6)


def test_only_crop_flip_and_normalise_move_to_the_device():
    with pytest.raises(ValueError, match="RandAugment|no batched device version"):
        split_for_device(finetuning_transform(32, auto_augment="rand-m6-mstd0.5-inc1"))
    randaugment = finetuning_transform(32)
    assert place_augmentation(randaugment, "auto", "cuda")[1:] == (None, "cpu")
    with pytest.raises(ValueError, match="--augment_on accelerator"):
        place_augmentation(randaugment, "accelerator", "cpu")
    for augment_on in ("auto", "accelerator"):
        for device in ("cpu", "cuda"):
            _, device_half, where = place_augmentation(pretraining_transform(32), augment_on, device)
            assert where == "accelerator" and isinstance(device_half, BatchedResizedCrop)
    # timm's crop: on the device on a GPU; on a CPU only when asked (emulating PIL costs a CPU as much as PIL).
    timm_crop = finetuning_transform(32, auto_augment=None)
    assert place_augmentation(timm_crop, "auto", "cuda")[2] == "accelerator"
    assert place_augmentation(timm_crop, "auto", "cpu")[2] == "cpu"
    assert place_augmentation(timm_crop, "accelerator", "cpu")[2] == "accelerator"
    assert place_augmentation(pretraining_transform(32), "cpu", "cuda")[1:] == (None, "cpu")


@pytest.fixture(scope="module")
def corpus():
    images = [eight_bit(*SIZES[i % len(SIZES)], seed=i) for i in range(24)]
    return datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))


def epochs_of(loader, epochs: int, prepare=None) -> list[torch.Tensor]:
    seen = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            seen.append((prepare(batch) if prepare else batch)["pixel_values"])
    return seen


def test_the_recipes_loader_gives_the_cpu_paths_batches_with_persistent_workers(corpus):
    transform = pretraining_transform(32, scale=(0.3, 1.0))
    draws, on_device, _ = place_augmentation(transform, "accelerator", "cpu")
    reference = make_loader(
        TransformedCorpus(corpus, transform, seed=7, label_key=None), batch_size=5, shuffle=True, num_workers=0
    )
    persistent = make_loader(
        TransformedCorpus(corpus, draws, seed=7, label_key=None),
        batch_size=5,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
    )
    expected, got = epochs_of(reference, 3), epochs_of(persistent, 3, on_device)
    assert len(expected) == len(got) == 15
    for one, other in zip(expected, got, strict=True):
        assert (one - other).abs().max().item() < 1e-5
    # New augmentations every epoch, even though the workers (and their copies of the corpus) persist.
    assert not torch.equal(got[0], got[5])
