"""`pipeline("image-classification", ..., trust_remote_code=True)` reads 16-bit PNG and DICOM as `cxr-vitmae predict`
does (issue 20, item 1), and a native export, which stock transformers reads in 8 bits, warns on a saturated file.

The fixtures are real files: a 16-bit grayscale PNG whose values (0..4000) saturate in transformers' own 8-bit RGB
conversion, and a 12-bit MONOCHROME1 DICOM with a rescale and a window. Each test also shows that the stock route gives
other scores on the same file (or refuses it), so a pipeline that fell back to it would fail here."""

import json
import warnings

import numpy as np
import pytest
import torch
from model_helpers import randomize_, run_without_package, small_densenet_config, tiny_vit_config
from PIL import Image
from test_image_processor import write_dicom
from transformers import ImageClassificationPipeline, pipeline

from cxr_vitmae import CXRViTMAEForPreTraining, DenseNetForChestXray, RadiographReadError, ViTMAEForChestXray
from cxr_vitmae.hub.export_native import SaturationWarning, export_native, stock_8bit_saturation
from cxr_vitmae.models.pipeline_cxr import CXRImageClassificationPipeline
from cxr_vitmae.predict import decode_images, load_classifier, predict_images

pydicom = pytest.importorskip("pydicom")

TOLERANCE = 1e-4  # the acceptance bound; predict rounds to 6 decimals
CLASSIFIERS = {
    "vit": lambda: ViTMAEForChestXray(tiny_vit_config()),
    "densenet": lambda: DenseNetForChestXray(small_densenet_config()),
}


def _anatomy(shape: tuple[int, int]) -> np.ndarray:
    """Smooth lung-like structure with noise, in [0, 1]."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]] / np.array(shape, dtype=float)[:, None, None]
    lungs = np.exp(-(((cols - 0.3) / 0.15) ** 2 + ((rows - 0.5) / 0.3) ** 2)) + np.exp(
        -(((cols - 0.7) / 0.15) ** 2 + ((rows - 0.5) / 0.3) ** 2)
    )
    noise = np.random.default_rng(0).normal(0.0, 0.05, size=rows.shape)
    return np.clip(0.8 - 0.6 * lungs + 0.2 * rows + noise, 0.0, 1.0)


def _write_png16(path) -> None:
    # 12-bit data in a 16-bit PNG, as many radiographs are stored: values 0..4000, most of them above 255.
    Image.fromarray(np.round(_anatomy((72, 88)) * 4000).astype(np.uint16)).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"


def _write_dicom(path) -> None:
    stored = np.round((1.0 - _anatomy((80, 64))) * 4095).astype(np.uint16)  # MONOCHROME1: bright means low
    write_dicom(
        path, stored, "MONOCHROME1", RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=2500, WindowWidth=5000
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    files = {"png16": root / "chest 16bit.png", "dicom": root / "chest.dcm", "png8": root / "chest8.png"}
    _write_png16(files["png16"])
    _write_dicom(files["dicom"])
    Image.fromarray(np.round(_anatomy((72, 88)) * 255).astype(np.uint8)).save(files["png8"])
    models = {}
    for name, build in CLASSIFIERS.items():
        randomize_(build()).eval().save_pretrained(root / name)
        model, processor = load_classifier(root / name)
        models[name] = {
            "dir": root / name,
            "num_labels": model.config.num_labels,
            # `cxr-vitmae predict`'s own functions: the reference scores.
            "predict": predict_images(model, processor, decode_images([files["png16"], files["dicom"]])),
        }
    return {"root": root, "files": files, "models": models}


def _scores(results) -> dict[str, float]:
    return {entry["label"]: entry["score"] for entry in results}


def _assert_close(scores: dict[str, float], expected: dict[str, float]) -> None:
    assert set(scores) == set(expected)
    worst = max(abs(scores[label] - expected[label]) for label in expected)
    assert worst <= TOLERANCE, worst


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_a_saved_classifier_names_its_pipeline_in_config(setup, name):
    directory = setup["models"][name]["dir"]
    config = json.loads((directory / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "image-classification": {
            "impl": "pipeline_cxr.CXRImageClassificationPipeline",
            "pt": ["AutoModelForImageClassification"],
            "type": "image",
        }
    }
    assert (directory / "pipeline_cxr.py").is_file()


def test_a_pretraining_directory_names_no_pipeline(tmp_path):
    # Its pipeline would load the classifier class with a random head.
    randomize_(CXRViTMAEForPreTraining(tiny_vit_config())).save_pretrained(tmp_path)
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_pipeline_with_remote_code_gives_predicts_scores(setup, name):
    entry, files = setup["models"][name], setup["files"]
    classify = pipeline("image-classification", model=str(entry["dir"]), trust_remote_code=True)
    assert type(classify).__name__ == CXRImageClassificationPipeline.__name__
    assert type(classify).__module__.startswith("transformers_modules.")  # the directory's copy
    stock = ImageClassificationPipeline(model=classify.model, image_processor=classify.image_processor)
    for kind in ("png16", "dicom"):
        path = str(files[kind])
        scores = _scores(classify(path, top_k=entry["num_labels"]))
        _assert_close(scores, entry["predict"][path])
        assert sum(scores.values()) != pytest.approx(1.0, abs=1e-3)  # independent sigmoids (multi-label)
    # The stock route on the same files: saturated, so other scores; DICOM cannot be opened at all.
    png16 = str(files["png16"])
    saturated = _scores(stock(png16, top_k=entry["num_labels"]))
    assert max(abs(saturated[label] - entry["predict"][png16][label]) for label in saturated) > 100 * TOLERANCE
    with pytest.raises(Exception, match="identify|cannot"):
        stock(str(files["dicom"]))


def test_pipeline_reads_images_and_arrays_and_keeps_top_k_and_function_to_apply(setup):
    entry, png16 = setup["models"]["vit"], setup["files"]["png16"]
    classify = pipeline("image-classification", model=str(entry["dir"]), trust_remote_code=True)
    expected = entry["predict"][str(png16)]
    with Image.open(png16) as image:
        image.load()
        _assert_close(_scores(classify(image, top_k=entry["num_labels"])), expected)
        array = np.asarray(image).astype(np.uint16)
    batch = classify([array, str(png16)], top_k=entry["num_labels"])
    for results in batch:
        _assert_close(_scores(results), expected)

    top = classify(str(png16), top_k=3)
    assert [result["label"] for result in top] == sorted(expected, key=expected.get, reverse=True)[:3]
    logits = _scores(classify(str(png16), top_k=entry["num_labels"], function_to_apply="none"))
    for label, probability in expected.items():
        assert torch.sigmoid(torch.tensor(logits[label])).item() == pytest.approx(probability, abs=TOLERANCE)


def test_pipeline_refuses_what_it_cannot_read(setup, tmp_path):
    classify = pipeline("image-classification", model=str(setup["models"]["vit"]["dir"]), trust_remote_code=True)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a radiograph")
    # The directory's copy of RadiographReadError, a ValueError.
    with pytest.raises(ValueError, match="Cannot read image file .*notes.png") as raised:
        classify(str(not_an_image))
    assert type(raised.value).__name__ == RadiographReadError.__name__
    # Without trust_remote_code transformers refuses the directory's pipeline instead of falling back to its 8-bit one.
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("image-classification", model=str(setup["models"]["vit"]["dir"]))


@pytest.mark.slow
def test_pipeline_without_the_package_gives_predicts_scores(setup):
    entry, files = setup["models"]["vit"], setup["files"]
    paths = [str(files["png16"]), str(files["dicom"])]
    stdout = run_without_package(
        f"""
        import json
        from transformers import pipeline
        classify = pipeline("image-classification", model={str(entry["dir"])!r}, trust_remote_code=True)
        scores = {{path: classify(path, top_k={entry["num_labels"]}) for path in {paths!r}}}
        print(json.dumps({{"class": type(classify).__name__, "scores": scores}}))
        """,
        setup["root"],
    )
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["class"] == "CXRImageClassificationPipeline"
    for path in paths:
        _assert_close(_scores(result["scores"][path]), entry["predict"][path])


def test_predict_on_a_native_export_warns_on_a_saturated_16bit_file(setup):
    files = setup["files"]
    native = export_native(setup["models"]["vit"]["dir"], setup["root"] / "vit-native")
    model, processor = load_classifier(native)
    assert stock_8bit_saturation(files["png16"]) == pytest.approx(np.mean(np.asarray(Image.open(files["png16"])) > 255))
    assert stock_8bit_saturation(files["png16"]) > 0.5

    with pytest.warns(SaturationWarning, match=r"chest 16bit\.png is a 16-bit image.*clips"):
        scores = predict_images(model, processor, decode_images([files["png16"]]))[str(files["png16"])]
    # The warning is true: stock transformers' pipeline on the export scores the file otherwise.
    stock = _scores(pipeline("image-classification", model=str(native))(str(files["png16"]), top_k=14))
    assert max(abs(stock[label] - scores[label]) for label in scores) > 100 * TOLERANCE

    # 8-bit PNGs and DICOM (which the stock pipeline refuses outright) do not warn.
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturationWarning)
        predict_images(model, processor, decode_images([files["png8"], files["dicom"]]))
    assert stock_8bit_saturation(files["png8"]) == stock_8bit_saturation(files["dicom"]) == 0.0


def test_the_cli_warns_on_a_native_export(setup):
    from cxr_vitmae.cli import main

    native = setup["root"] / "vit-native-cli"
    export_native(setup["models"]["vit"]["dir"], native)
    with pytest.warns(SaturationWarning):
        assert main(["predict", str(native), str(setup["files"]["png16"])]) == 0
