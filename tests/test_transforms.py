"""The pre-training, fine-tuning and evaluation transforms and the `with_transform` batch function."""

import copy
import io
import math

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import ColorJitter, InterpolationMode, RandomHorizontalFlip, v2

from cxr_vitmae import CXRImageProcessor
from cxr_vitmae.data.transforms import (
    CXR_MEAN,
    CXR_STD,
    collate_radiographs,
    evaluation_transform,
    finetuning_transform,
    make_batch_transform,
    pretraining_transform,
)

TRANSFORMS = {
    "pretraining": pretraining_transform,
    "finetuning": finetuning_transform,
    "evaluation": evaluation_transform,
}


def smooth_image(height: int, width: int, seed: int, bits: int = 8) -> np.ndarray:
    """Gradients plus noise, so that resizes and crops change values and offsets matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    values = 0.5 + 0.3 * np.sin(x / 7.0) * np.cos(y / 11.0) + rng.normal(0, 0.05, (height, width))
    values = np.clip(values, 0, 1)
    return (values * 255).astype(np.uint8) if bits == 8 else (values * 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def png_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("transform-images")
    files = {}
    # 301 x 263: after the resize to 256 the long side is 292, an even margin; 263 x 301 gives an odd one.
    for name, (height, width, bits) in {
        "tall8": (301, 263, 8),
        "wide8": (263, 301, 8),
        "tall16": (301, 263, 16),
        "wide16": (250, 331, 16),
    }.items():
        files[name] = root / f"{name}.png"
        Image.fromarray(smooth_image(height, width, seed=len(files), bits=bits)).save(files[name])
    return files


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("kind", ["array8", "array16", "pil", "path", "rgb"])
def test_output_is_a_three_channel_view_of_one_channel(name, kind, png_files):
    image = {
        "array8": smooth_image(300, 280, seed=1),
        "array16": smooth_image(280, 300, seed=2, bits=16),
        "pil": Image.open(png_files["tall8"]),
        "path": str(png_files["wide16"]),
        "rgb": np.repeat(smooth_image(260, 260, seed=3)[..., None], 3, axis=2),  # gray stored as RGB
    }[kind]
    out = TRANSFORMS[name]()(image)
    assert out.shape == (3, 224, 224)
    assert out.dtype == torch.float32
    # Three channels only as the final expand: one channel in memory, stride 0 across channels.
    assert out.stride(0) == 0
    assert out._base is not None and out._base.shape == (1, 224, 224)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_augmentations_see_a_single_channel(name):
    transform = TRANSFORMS[name]()
    seen = []
    augment = transform.augment

    def spy(image):
        seen.append(image.mode if isinstance(image, Image.Image) else tuple(image.shape))
        return augment(image)

    transform.augment = spy
    transform(smooth_image(256, 256, seed=4, bits=16))
    assert seen == (["L"] if name == "finetuning" else [(1, 256, 256)])


def test_colour_images_keep_their_channels():
    rng = np.random.default_rng(5)
    out = evaluation_transform()(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    assert out.shape == (3, 224, 224) and out.stride(0) != 0
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("name", ["tall8", "wide8", "tall16", "wide16"])
def test_evaluation_transform_equals_the_image_processor(name, png_files):
    processor = CXRImageProcessor()
    for source in (str(png_files[name]), Image.open(png_files[name])):
        expected = processor(source, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(evaluation_transform()(source), expected, rtol=0, atol=1e-4)


def test_evaluation_transform_follows_image_size():
    transform = evaluation_transform(image_size=384)
    processor = CXRImageProcessor.for_image_size(384)
    image = smooth_image(500, 470, seed=6, bits=16)
    expected = processor(image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(transform(image), expected, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="resize"):
        evaluation_transform(image_size=224, resize=200)


def test_sixteen_bit_input_is_rescaled_not_clipped():
    value = 30000  # above 255: a clip to 8 bits would make the image white
    image = np.full((300, 300), value, dtype=np.uint16)
    exact = (value / 65535 - CXR_MEAN) / CXR_STD
    for transform in (pretraining_transform(), evaluation_transform()):
        torch.testing.assert_close(transform(image), torch.full((3, 224, 224), exact), rtol=0, atol=1e-4)
    # Fine-tuning quantises to 8 bits for RandAugment (switched off here to see the pixel values).
    quantised = (round(value / 65535 * 255) / 255 - CXR_MEAN) / CXR_STD
    out = finetuning_transform(auto_augment=None)(image)
    torch.testing.assert_close(out, torch.full((3, 224, 224), quantised), rtol=0, atol=1e-4)
    assert abs(quantised - exact) < 1 / 255 / CXR_STD


def test_eight_bit_values_round_trip_exactly_through_the_pil_stage():
    image = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    transform = finetuning_transform(auto_augment=None, scale=(1.0, 1.0), hflip=0.0, image_size=256)
    transform.augment.transforms[0].ratio = (1.0, 1.0)  # a full-image crop at the same size: no resampling
    out = transform(image)[0]
    torch.testing.assert_close(out, (torch.from_numpy(image).float() / 255 - CXR_MEAN) / CXR_STD)


def test_finetuning_is_the_papers_timm_recipe():
    steps = finetuning_transform().augment.transforms
    crop, flip, randaugment = steps[:3]
    assert type(crop).__name__ == "RandomResizedCropAndInterpolation"
    assert crop.size == (224, 224) and crop.scale == (0.08, 1.0)
    assert crop.interpolation == InterpolationMode.BICUBIC
    assert isinstance(flip, RandomHorizontalFlip) and flip.p == 0.5
    # rand-m6-mstd0.5-inc1: two ops per image, magnitude 6 with std 0.5, the "Increasing" op variants.
    assert isinstance(randaugment, RandAugment)
    assert randaugment.num_layers == 2 and randaugment.choice_weights is None
    names = [op.name for op in randaugment.ops]
    assert {"PosterizeIncreasing", "SolarizeIncreasing", "ContrastIncreasing", "SharpnessIncreasing"} <= set(names)
    assert "Posterize" not in names and "Solarize" not in names
    for op in randaugment.ops:
        assert op.magnitude == 6 and op.magnitude_std == 0.5 and op.prob == 0.5
        assert op.hparams["img_mean"] == (round(255 * CXR_MEAN),)  # one gray fill value, not an RGB triple
        assert op.hparams["interpolation"] == Image.BICUBIC
    # No colour jitter, no random erasing: the paper runs with reprob 0 and colour jitter off under RandAugment.
    assert not any(isinstance(step, (ColorJitter, RandomErasing)) for step in steps)
    normalize = steps[-1]
    assert normalize.mean.tolist() == pytest.approx([CXR_MEAN]) and normalize.std.tolist() == pytest.approx([CXR_STD])


def test_every_randaugment_op_works_on_grayscale():
    randaugment = next(step for step in finetuning_transform().augment.transforms if isinstance(step, RandAugment))
    image = Image.fromarray(smooth_image(224, 224, seed=7), "L")
    for op in randaugment.ops:
        always = copy.copy(op)
        always.prob = 1.0
        out = always(image)
        assert out.mode == "L" and out.size == image.size, op.name


def test_pretraining_is_the_mae_recipe():
    crop, flip, normalize = pretraining_transform().augment.transforms
    assert isinstance(crop, v2.RandomResizedCrop)
    assert crop.size == (224, 224) and crop.scale == (0.5, 1.0)
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert crop.interpolation == InterpolationMode.BICUBIC and crop.antialias
    assert isinstance(flip, v2.RandomHorizontalFlip) and flip.p == 0.5
    assert normalize.mean == [CXR_MEAN] and normalize.std == [CXR_STD]


def test_augmentations_are_random():
    image = smooth_image(300, 300, seed=8)
    for transform in (pretraining_transform(), finetuning_transform()):
        assert not torch.equal(transform(image), transform(image))
    assert torch.equal(evaluation_transform()(image), evaluation_transform()(image))


def test_batch_transform_accepts_every_image_cell_and_returns_tensors(png_files):
    png = png_files["tall8"].read_bytes()
    batch = {
        "image": [Image.open(png_files["tall8"]), str(png_files["tall8"]), {"bytes": png, "path": "x.png"}],
        "labels": [[1.0, 0.0], [0.0, math.nan], [1.0, 1.0]],
        "label": [0, 2, 1],
    }
    out = make_batch_transform(evaluation_transform())(batch)
    assert set(out) == {"pixel_values", "labels"}
    assert out["pixel_values"].shape == (3, 3, 224, 224) and out["pixel_values"].stride(1) == 0
    assert torch.equal(out["pixel_values"][0], out["pixel_values"][1])
    assert torch.equal(out["pixel_values"][0], out["pixel_values"][2])
    assert out["labels"].dtype == torch.float32 and out["labels"].shape == (3, 2)
    assert math.isnan(out["labels"][1, 1])

    single = make_batch_transform(evaluation_transform(), label_key="label")(batch)
    assert single["labels"].dtype == torch.int64 and single["labels"].tolist() == [0, 2, 1]
    assert set(make_batch_transform(evaluation_transform(), label_key=None)(batch)) == {"pixel_values"}
    with pytest.raises(KeyError, match="label_key=None"):
        make_batch_transform(evaluation_transform())({"image": batch["image"]})


def test_with_transform_and_dataloader_give_batched_tensors():
    images = []
    for seed in range(4):
        buffer = io.BytesIO()
        Image.fromarray(smooth_image(260, 240, seed=seed, bits=16)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features(
        {"image": datasets.Image(), "labels": datasets.Sequence(datasets.Value("float32"), length=3)}
    )
    labels = [[float(i == j) for j in range(3)] for i in range(4)]
    dataset = datasets.Dataset.from_dict({"image": images, "labels": labels}, features=features)
    loader = torch.utils.data.DataLoader(
        dataset.with_transform(make_batch_transform(pretraining_transform())), batch_size=2
    )
    batches = list(loader)
    assert [batch["pixel_values"].shape for batch in batches] == [(2, 3, 224, 224)] * 2
    assert torch.equal(torch.cat([batch["labels"] for batch in batches]), torch.tensor(labels))

    evaluation = dataset.with_transform(make_batch_transform(evaluation_transform()))
    default = next(iter(torch.utils.data.DataLoader(evaluation, batch_size=4)))
    one_channel = next(iter(torch.utils.data.DataLoader(evaluation, batch_size=4, collate_fn=collate_radiographs)))
    assert one_channel["pixel_values"].stride(1) == 0 and default["pixel_values"].is_contiguous()
    assert torch.equal(one_channel["pixel_values"], default["pixel_values"])
    assert torch.equal(one_channel["labels"], default["labels"])


def test_collate_keeps_colour_batches_as_they_are():
    rows = [{"pixel_values": torch.rand(3, 8, 8), "labels": torch.tensor([1.0])} for _ in range(2)]
    batch = collate_radiographs(rows)
    assert batch["pixel_values"].is_contiguous() and torch.equal(batch["pixel_values"][1], rows[1]["pixel_values"])
