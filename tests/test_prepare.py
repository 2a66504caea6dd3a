"""`prepare_corpus`: the resized Arrow copy of a corpus, read transparently by `load_cxr_dataset`, and resumable."""

import io
import json
import shutil

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvF

from cxr_vitmae.data import CorpusError, load_cxr_dataset
from cxr_vitmae.data import prepare as prepare_module
from cxr_vitmae.data.phantoms import generate_phantoms, phantom_record
from cxr_vitmae.data.prepare import MANIFEST_NAME, prepare_corpus
from cxr_vitmae.models.image_processing_cxr import load_radiograph

# NIH's header as distributed: commas inside the last two names and the 2017 file's trailing comma.
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
FINDINGS = ["No Finding", "Cardiomegaly", "Effusion|Infiltration", "Mass|Nodule", "Pneumothorax", "Hernia"]
SIZE = 32
SIXTEEN_BIT = {"00000002_000.png", "00000011_001.png"}
COLOUR = {"00000005_000.png"}  # gray stored as RGB, as some corpora do
BOXED_IMAGE = "00000012_000.png"


def write_nih_fixture(root):
    """13 patients (10 train_val, 3 test), 1-3 follow-ups each, small non-square 8- and 16-bit PNGs."""
    rng = np.random.default_rng(0)
    lines, train_val, test = [NIH_HEADER], [], []
    (root / "images").mkdir(parents=True)
    for patient in range(1, 14):
        for follow_up in range(1 + patient % 3):
            name = f"{patient:08d}_{follow_up:03d}.png"
            height, width = int(rng.integers(40, 60)), int(rng.integers(40, 60))
            values = np.clip(rng.normal(0.5, 0.2, (height, width)), 0, 1)
            if name in SIXTEEN_BIT:
                image = Image.fromarray((values * 65535).astype(np.uint16))
            elif name in COLOUR:
                image = Image.fromarray(np.repeat((values * 255).astype(np.uint8)[..., None], 3, axis=2))
            else:
                image = Image.fromarray((values * 255).astype(np.uint8))
            image.save(root / "images" / name)
            view = "PA" if (patient + follow_up) % 2 else "AP"
            findings = FINDINGS[(patient + follow_up) % len(FINDINGS)]
            lines.append(f"{name},{findings},{follow_up},{patient},{30 + patient},F,{view},{width},{height},0.14,0.14,")
            (test if patient > 10 else train_val).append(name)
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + f"{BOXED_IMAGE},Infiltrate,10.0,12.5,20.0,8.0,,,\n"
    )
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_nih_fixture(tmp_path_factory.mktemp("nih"))


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    return prepare_corpus("nih-chestxray14", corpus, tmp_path_factory.mktemp("out") / "prepared", size=SIZE, num_proc=2)


def resized_source(path):
    """The source image resized as prepare must have resized it, before quantisation."""
    array = load_radiograph(path)
    array = array[..., 0] if array.ndim == 3 else array  # gray stored as RGB: one channel is kept
    resized = tvF.resize(torch.from_numpy(array)[None], [SIZE], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return resized[0].clamp(0, 1).numpy()


def undecoded(dataset):
    return dataset.cast_column("image", datasets.Image(decode=False))


def assert_same_columns(left, right, skip=("image",)):
    assert left.features == right.features
    for column in left.column_names:
        if column not in skip:
            assert left[column] == right[column], column


@pytest.mark.slow
def test_prepared_equals_the_corpus_with_resized_images(corpus, prepared):
    source = load_cxr_dataset("nih-chestxray14", corpus)
    result = datasets.load_from_disk(str(prepared))
    assert list(result) == list(source) == ["train", "validation", "test"]
    for split in source:
        assert_same_columns(result[split], source[split], skip=("image", "boxes"))
        for boxes, original_boxes, cell, original in zip(
            result[split]["boxes"],
            source[split]["boxes"],
            undecoded(result[split])["image"],
            undecoded(source[split])["image"],
            strict=True,
        ):
            (width, height), (source_width, source_height) = (
                Image.open(io.BytesIO(cell["bytes"])).size,
                Image.open(original["path"]).size,
            )
            sx, sy = width / source_width, height / source_height
            assert [box["label"] for box in boxes] == [box["label"] for box in original_boxes]
            for box, original_box in zip(boxes, original_boxes, strict=True):
                scaled = [original_box[k] * (sx if k in "xw" else sy) for k in "xywh"]
                assert [box[k] for k in "xywh"] == pytest.approx(scaled)
        cells = undecoded(result[split])["image"]
        for cell, original in zip(cells, undecoded(source[split])["image"], strict=True):
            assert cell["bytes"] is not None  # self-contained
            # datasets keeps the file name of embedded images; the suffix says what the bytes are.
            assert cell["path"] == original["path"].rsplit("/", 1)[1].replace(".png", ".pgm")
            image = Image.open(io.BytesIO(cell["bytes"]))
            assert min(image.size) == SIZE
            sixteen_bit = original["path"].endswith(tuple(SIXTEEN_BIT))
            assert image.format == "PPM" and image.mode == ("I" if sixteen_bit else "L")
            step = 65535 if sixteen_bit else 255
            np.testing.assert_allclose(
                load_radiograph(image), resized_source(original["path"]), rtol=0, atol=0.5 / step + 1e-6
            )

    assert any(result["test"]["boxes"]), "the fixture's box must reach the prepared test split"

    manifest = json.loads((prepared / MANIFEST_NAME).read_text())
    assert manifest["corpus"] == "nih-chestxray14" and manifest["size"] == SIZE
    assert manifest["source_data_dir"] == str(corpus)
    assert manifest["splits"] == {split: len(source[split]) for split in source}
    assert manifest["options"]["validation_fraction"] == 0.1
    assert not (prepared / ".prepare-partial").exists()


def test_load_cxr_dataset_reads_the_prepared_directory(prepared):
    loaded = load_cxr_dataset("nih-chestxray14", prepared)
    on_disk = datasets.load_from_disk(str(prepared))
    for split in on_disk:
        assert_same_columns(loaded[split], on_disk[split], skip=())
    # Options equal to the defaults, spelled out, are the same request.
    load_cxr_dataset("nih-chestxray14", prepared, validation_fraction=0.1, views="all")


def test_a_mismatched_request_raises(corpus, prepared):
    with pytest.raises(CorpusError, match=r"validation_fraction=0\.1 when prepared, 0\.2 requested"):
        load_cxr_dataset("nih-chestxray14", prepared, validation_fraction=0.2)
    with pytest.raises(CorpusError, match="holds the 'nih-chestxray14' corpus, not 'chexpert'"):
        load_cxr_dataset("chexpert", prepared)
    with pytest.raises(CorpusError, match="no option"):
        load_cxr_dataset("nih-chestxray14", prepared, colour="red")
    with pytest.raises(CorpusError, match="already holds a prepared corpus"):
        prepare_corpus("nih-chestxray14", corpus, prepared, size=SIZE + 1)


def test_a_damaged_prepared_directory_raises(prepared, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["splits"]["train"] += 1
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorpusError, match="split sizes"):
        load_cxr_dataset("nih-chestxray14", copy)
    (copy / MANIFEST_NAME).write_text("{")
    with pytest.raises(CorpusError, match=MANIFEST_NAME):
        load_cxr_dataset("nih-chestxray14", copy)


def test_prepare_refuses_a_non_empty_output_directory(corpus, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty"):
        prepare_corpus("nih-chestxray14", corpus, tmp_path, size=SIZE)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_interrupted_run_resumes_and_equals_an_uninterrupted_one(corpus, prepared, tmp_path, monkeypatch):
    output = tmp_path / "resumed"
    encode = prepare_module._encode_image
    calls = []

    def interrupted(image, size):
        if len(calls) == 12:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(image["path"])
        return encode(image, size)

    # Chunks of 5: the train split's first two chunks complete, the third is cut short after 2 images.
    monkeypatch.setattr(prepare_module, "_encode_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus("nih-chestxray14", corpus, output, size=SIZE, chunk_size=5)
    assert not (output / MANIFEST_NAME).exists()
    with pytest.raises(CorpusError, match="Data_Entry"):  # not mistaken for a prepared corpus
        load_cxr_dataset("nih-chestxray14", output)

    calls.clear()

    def counting(image, size):
        calls.append(image["path"])
        return encode(image, size)

    monkeypatch.setattr(prepare_module, "_encode_image", counting)
    assert prepare_corpus("nih-chestxray14", corpus, output, size=SIZE, chunk_size=5) == output
    total = sum(json.loads((output / MANIFEST_NAME).read_text())["splits"].values())
    assert len(calls) == total - 10  # the two completed chunks were not redone

    # Same rows, same bytes as the uninterrupted run with two processes and one chunk per split.
    resumed, reference = datasets.load_from_disk(str(output)), datasets.load_from_disk(str(prepared))
    for split in reference:
        assert_same_columns(undecoded(resumed[split]), undecoded(reference[split]), skip=())

    calls.clear()
    prepare_corpus("nih-chestxray14", corpus, output, size=SIZE, chunk_size=5)
    assert calls == []  # complete: nothing to do


def test_a_prepared_copy_of_phantoms_is_still_labelled_synthetic(prepared, tmp_path):
    phantoms = generate_phantoms(tmp_path / "phantoms", 10, size=32, seed=2).output_dir
    copy = prepare_corpus("nih-chestxray14", phantoms, tmp_path / "prepared", size=24, num_proc=1)
    assert phantom_record(copy) == phantom_record(phantoms) is not None
    assert phantom_record(prepared) is None  # prepared from NIH's own layout
