"""Tests for `cxr_vitmae.models.image_processing_cxr`: radiograph loading and the image processor."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvF

from cxr_vitmae.models.image_processing_cxr import CXRImageProcessor, RadiographReadError, load_radiograph

MEAN, STD = 0.5056, 0.252


def reference_pixel_values(gray01: np.ndarray) -> torch.Tensor:
    """Independent re-implementation of the default pipeline for a [0, 1] grayscale image -> (3, 224, 224)."""
    x = torch.from_numpy(gray01.astype(np.float64) * 255).float()[None]
    x = tvF.resize(x, [256], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
    x = tvF.center_crop(x, [224, 224])
    x = (x / 255 - MEAN) / STD
    return x.expand(3, -1, -1)


def write_png16(path: Path, arr: np.ndarray) -> None:
    """Write a 16-bit PNG by hand: PIL cannot write 16-bit colour PNGs."""
    arr = np.asarray(arr, dtype=np.uint16)
    height, width = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + arr[row].astype(">u2").tobytes() for row in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def processor() -> CXRImageProcessor:
    return CXRImageProcessor()


@pytest.fixture
def gray8(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:450]
    arr = np.clip(0.5 * xx + 0.3 * yy + rng.normal(0, 20, xx.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "gray8.png"
    Image.fromarray(arr).save(path)
    return path, arr


def pv(processor: CXRImageProcessor, images) -> torch.Tensor:
    return processor(images, return_tensors="pt")["pixel_values"]


# ---------------------------------------------------------------- 8-bit and colour files


def test_defaults(processor):
    assert processor.size == {"shortest_edge": 256}
    assert processor.crop_size == {"height": 224, "width": 224}
    assert processor.resample == 3  # PIL BICUBIC
    assert processor.do_center_crop and processor.do_rescale and processor.do_normalize
    assert processor.rescale_factor == pytest.approx(1 / 255)
    assert list(processor.image_mean) == [MEAN] * 3 and list(processor.image_std) == [STD] * 3
    assert processor.model_input_names == ["pixel_values"]


def test_gray8_png_matches_independent_pipeline(processor, gray8):
    path, arr = gray8
    loaded = load_radiograph(path)
    assert loaded.dtype == np.float32 and loaded.shape == arr.shape  # stays single channel
    np.testing.assert_array_equal(loaded, arr.astype(np.float32) / 255)

    out = pv(processor, path)
    assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32
    expected = reference_pixel_values(np.asarray(Image.open(path)).astype(np.float64) / 255)
    assert (out[0] - expected).abs().max().item() <= 1e-4


def test_str_path_pil_numpy_tensor_agree(processor, gray8):
    path, arr = gray8
    ref = pv(processor, path)
    for image in (str(path), Image.open(path), arr, torch.from_numpy(arr), arr[..., None], arr[None]):
        torch.testing.assert_close(pv(processor, image), ref, atol=0, rtol=0)


def test_rgba_drops_alpha(processor, tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (240, 260, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (240, 260, 1), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.concatenate([rgb, alpha], axis=-1)).save(tmp_path / "rgba.png")
    assert Image.open(tmp_path / "rgba.png").mode == "RGBA"

    loaded = load_radiograph(tmp_path / "rgba.png")
    assert loaded.shape == (240, 260, 3)
    np.testing.assert_array_equal(loaded, load_radiograph(tmp_path / "rgb.png"))
    torch.testing.assert_close(pv(processor, tmp_path / "rgba.png"), pv(processor, tmp_path / "rgb.png"))


def test_la_drops_alpha(tmp_path, gray8):
    _, arr = gray8
    Image.fromarray(np.stack([arr, 255 - arr], axis=-1), mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_radiograph(tmp_path / "la.png"), arr.astype(np.float32) / 255)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_readable(processor, tmp_path, gray8, mode):
    _, arr = gray8
    image = Image.fromarray(arr).convert(mode)
    path = tmp_path / f"img_{mode}.jpg"
    image.save(path, quality=95)
    loaded = load_radiograph(path)
    assert loaded.shape == (arr.shape if mode == "L" else (*arr.shape, 3))
    ref = arr.astype(np.float32) / 255
    if mode == "RGB":
        ref = np.repeat(ref[..., None], 3, axis=-1)
    assert np.abs(loaded - ref).mean() < 0.03
    out = pv(processor, [path, str(path)])
    assert out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out[0], out[1])


def test_mixed_batch_gray_and_rgb(processor, gray8):
    path, arr = gray8
    rgb = np.random.default_rng(2).integers(0, 256, (200, 320, 3), dtype=np.uint8)
    out = pv(processor, [path, rgb, Image.fromarray(arr)])
    assert out.shape == (3, 3, 224, 224)
    torch.testing.assert_close(out[0], out[2])
    assert not torch.equal(out[1][0], out[1][1])  # colour channels are not collapsed

    listed = processor([path, rgb])["pixel_values"]  # no return_tensors: a list of (3, 224, 224)
    assert isinstance(listed, list) and all(t.shape == (3, 224, 224) for t in listed)


def test_grayscale_without_normalize_is_expanded(gray8):
    path, _ = gray8
    out = CXRImageProcessor(do_normalize=False)(path, return_tensors="pt")["pixel_values"]
    assert out.shape == (1, 3, 224, 224)
    torch.testing.assert_close(out[0, 0], out[0, 2])
    assert out.min().item() >= 0.0 and out.max().item() <= 1.05  # bicubic may overshoot slightly


# ---------------------------------------------------------------- 16-bit


def test_png16_rescaled_not_clipped(processor, tmp_path):
    gradient = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = tmp_path / "grad16.png"
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode.startswith("I;16")

    loaded = load_radiograph(path)
    assert loaded.shape == (256, 256) and loaded.dtype == np.float32
    assert loaded.min() == 0.0 and loaded.max() == 1.0
    np.testing.assert_allclose(loaded, gradient / 65535, rtol=0, atol=1e-7)
    strictly_inside = ((loaded > 0.01) & (loaded < 0.99)).mean()
    assert strictly_inside > 0.1
    assert np.all(np.diff(loaded.ravel()) > 0)  # strictly monotone: nothing saturated

    out16 = pv(processor, path)
    out_float = pv(processor, gradient.astype(np.float64) / 65535)
    torch.testing.assert_close(out16, out_float, atol=1e-5, rtol=0)
    clipped = pv(processor, np.asarray(Image.open(path).convert("L")))  # what PIL's convert('L') would give
    assert (out16 - clipped).abs().max().item() > 0.5


def test_png16_mode_i_and_uint16_array_agree(tmp_path):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 65536, (64, 80), dtype=np.uint16)
    expected = arr.astype(np.float64) / 65535
    np.testing.assert_allclose(load_radiograph(arr), expected, atol=1e-7)
    np.testing.assert_allclose(load_radiograph(Image.fromarray(arr.astype(np.int32), mode="I")), expected, atol=1e-7)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_png16_colour_keeps_16_bits(processor, tmp_path, channels):
    rng = np.random.default_rng(4)
    arr = rng.integers(0, 65536, (50, 60, channels), dtype=np.uint16)
    path = tmp_path / f"c{channels}.png"
    write_png16(path, arr)
    loaded = load_radiograph(path)
    expected = arr[..., 0] if channels == 2 else arr[..., :3]
    np.testing.assert_allclose(loaded, expected / 65535, atol=1e-7)
    # Low byte must survive: 8-bit truncation would make these differ by up to 255/65535.
    assert np.abs(loaded - (expected >> 8 << 8) / 65535).max() > 1e-3


# ---------------------------------------------------------------- DICOM


def write_dicom(path: Path, stored: np.ndarray, photometric: str, **attrs) -> Path:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    assert path.read_bytes()[128:132] == b"DICM"
    assert pydicom.dcmread(path).PhotometricInterpretation == photometric
    return path


@pytest.fixture
def stored12() -> np.ndarray:
    # Full 12-bit range including both ends.
    return np.arange(4096, dtype=np.uint16).reshape(64, 64)


def test_dicom_rescale_maps_12bit_range(tmp_path, stored12):
    path = write_dicom(tmp_path / "rescale.dcm", stored12, "MONOCHROME2", RescaleSlope=2, RescaleIntercept=-1000)
    loaded = load_radiograph(path)
    assert loaded.shape == stored12.shape and loaded.dtype == np.float32
    assert loaded.min() == 0.0 and loaded.max() == 1.0
    np.testing.assert_allclose(loaded, stored12 / 4095, atol=1e-6)


def test_dicom_window_matches_standard_formula(tmp_path, stored12):
    center, width, slope, intercept = 0.0, 2000.0, 1.0, -1024.0
    path = write_dicom(
        tmp_path / "window.dcm",
        stored12,
        "MONOCHROME2",
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        WindowCenter=center,
        WindowWidth=width,
    )
    # PS3.3 C.11.2.1.2.1 (LINEAR), output range normalised to [0, 1].
    x = stored12.astype(np.float64) * slope + intercept
    c, w = center - 0.5, width - 1
    expected = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, (x - c) / w + 0.5))
    loaded = load_radiograph(path)
    np.testing.assert_allclose(loaded, expected, atol=1e-6)
    assert (loaded == 0).any() and (loaded == 1).any() and ((loaded > 0.1) & (loaded < 0.9)).any()


@pytest.mark.parametrize(
    "attrs",
    [
        {"RescaleSlope": 2, "RescaleIntercept": -1000},
        {"RescaleSlope": 1, "RescaleIntercept": -1024, "WindowCenter": 0, "WindowWidth": 2000},
        {},
    ],
    ids=["rescale", "window", "plain"],
)
def test_dicom_monochrome1_is_inverted(tmp_path, stored12, attrs):
    mono2 = load_radiograph(write_dicom(tmp_path / "m2.dcm", stored12, "MONOCHROME2", **attrs))
    mono1 = load_radiograph(write_dicom(tmp_path / "m1.dcm", stored12, "MONOCHROME1", **attrs))
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert not np.allclose(mono1, mono2)


def test_dicom_through_processor(processor, tmp_path, stored12):
    tiled = np.tile(stored12, (5, 7))  # 320 x 448
    path = write_dicom(tmp_path / "big.dcm", tiled, "MONOCHROME2")
    expected = reference_pixel_values(tiled / 4095)
    assert (pv(processor, path)[0] - expected).abs().max().item() <= 1e-4
    # Without a suffix the DICM magic alone identifies the file.
    no_suffix = tmp_path / "image_without_suffix"
    no_suffix.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(load_radiograph(no_suffix), load_radiograph(path))


def test_dicom_multiframe_rejected(tmp_path, stored12):
    frames = np.stack([stored12, stored12])
    path = tmp_path / "multi.dcm"
    write_dicom(path, frames.reshape(-1, 64), "MONOCHROME2")
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Rows, ds.NumberOfFrames = 64, 2
    ds.save_as(path)
    with pytest.raises(RadiographReadError, match="multi.dcm.*2 frames"):
        load_radiograph(path)


# ---------------------------------------------------------------- errors


def test_missing_file(processor, tmp_path):
    missing = tmp_path / "no_such_image.png"
    with pytest.raises(RadiographReadError, match="no_such_image.png"):
        load_radiograph(missing)
    with pytest.raises(RadiographReadError, match="no_such_image.png"):
        processor(str(missing))


def test_truncated_png(tmp_path, gray8):
    path, _ = gray8
    broken = tmp_path / "truncated_scan.png"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RadiographReadError, match="truncated_scan.png"):
        load_radiograph(broken)


def test_not_an_image(tmp_path):
    junk = tmp_path / "notes.dcm"
    junk.write_bytes(b"this is not a DICOM file" * 10)
    with pytest.raises(RadiographReadError, match="notes.dcm"):
        load_radiograph(junk)


@pytest.mark.parametrize(
    "bad",
    [
        np.full((10, 10), 1.5, dtype=np.float32),
        np.full((10, 10), -0.1),
        np.full((10, 10), np.nan, dtype=np.float32),
        np.zeros((10, 10), dtype=np.int64),
        np.zeros((5, 10, 10), dtype=np.uint8),
        Image.fromarray(np.full((10, 10), 70000, dtype=np.int32), mode="I"),
        b"not an image object",
    ],
    ids=["float>1", "float<0", "nan", "int64", "bad-shape", "mode-I-out-of-range", "bytes"],
)
def test_bad_inputs_raise(bad):
    with pytest.raises(RadiographReadError):
        load_radiograph(bad)


def test_valid_float_and_bool_arrays():
    arr = np.linspace(0, 1, 100, dtype=np.float64).reshape(10, 10)
    np.testing.assert_allclose(load_radiograph(arr), arr, atol=1e-7)
    mask = arr > 0.5
    np.testing.assert_array_equal(load_radiograph(mask), mask.astype(np.float32))


# ---------------------------------------------------------------- transformers integration


@pytest.mark.slow
def test_remote_code_roundtrip_without_package(processor, tmp_path, gray8):
    path, _ = gray8
    gradient = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path16 = tmp_path / "grad16.png"
    Image.fromarray(gradient).save(path16)
    save_dir = tmp_path / "saved"
    processor.save_pretrained(save_dir)
    config = json.loads((save_dir / "preprocessor_config.json").read_text())
    assert config["auto_map"]["AutoImageProcessor"] == "image_processing_cxr.CXRImageProcessor"
    assert (save_dir / "image_processing_cxr.py").is_file()

    script = textwrap.dedent(
        """
        import sys
        sys.modules["cxr_vitmae"] = None  # unimportable even if the package gets installed
        import numpy as np
        from transformers import AutoImageProcessor
        save_dir, out, *images = sys.argv[1:]
        proc = AutoImageProcessor.from_pretrained(save_dir, trust_remote_code=True)
        assert type(proc).__name__ == "CXRImageProcessor", type(proc)
        assert "cxr_vitmae" not in type(proc).__module__, type(proc).__module__
        np.save(out, proc(images, return_tensors="pt")["pixel_values"].numpy())
        """
    )
    out = tmp_path / "remote.npy"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, str(save_dir), str(out), str(path), str(path16)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    remote = torch.from_numpy(np.load(out))
    torch.testing.assert_close(remote, pv(processor, [path, path16]), atol=0, rtol=0)


def test_image_classification_pipeline(processor, gray8):
    from transformers import ViTConfig, ViTForImageClassification, pipeline

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=224,
        patch_size=32,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        id2label={0: "Normal", 1: "Effusion"},
        label2id={"Normal": 0, "Effusion": 1},
    )
    classify = pipeline(
        "image-classification", model=ViTForImageClassification(config).eval(), image_processor=processor
    )
    path, _ = gray8
    results = classify([str(path), Image.open(path)])
    assert len(results) == 2
    assert {r["label"] for r in results[0]} == {"Normal", "Effusion"}
    # The pipeline converts the file to RGB itself; both routes must give the same scores.
    assert results[0][0]["score"] == pytest.approx(results[1][0]["score"], abs=1e-5)
