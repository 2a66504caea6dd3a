"""`export_native`: a fine-tuned classifier as stock BEiT / timm_wrapper, loaded where cxr_vitmae is absent."""

import json

import numpy as np
import pytest
import torch
from model_helpers import randomize_, run_without_package, small_densenet_config, tiny_vit_config
from PIL import Image
from transformers import (
    AutoModelForImageClassification,
    BeitForImageClassification,
    TimmWrapperForImageClassification,
)

from cxr_vitmae import (
    CXRDenseNetConfig,
    CXRImageProcessor,
    CXRTimmConfig,
    CXRViTMAEForPreTraining,
    DenseNetForChestXray,
    TimmForChestXray,
    ViTMAEForChestXray,
)
from cxr_vitmae.hub.export_native import export_native
from cxr_vitmae.models.chest_xray_labels import COVIDX_LABELS
from cxr_vitmae.predict import decode_images, load_classifier, predict_images


def _vit(**overrides) -> ViTMAEForChestXray:
    return ViTMAEForChestXray(tiny_vit_config(**{"image_size": 64, "num_hidden_layers": 2, **overrides}))


CASES = {
    "vit-mean": lambda: _vit(),
    "vit-cls": lambda: _vit(use_mean_pooling=False),
    "vit-covidx": lambda: _vit(
        qkv_bias=False, id2label=dict(enumerate(COVIDX_LABELS)), problem_type="single_label_classification"
    ),
    "densenet121": lambda: DenseNetForChestXray(CXRDenseNetConfig.from_preset("densenet121", image_size=64)),
    "timm-resnet10t": lambda: TimmForChestXray(CXRTimmConfig.from_preset("timm:resnet10t", image_size=64)),
    "timm-convnext_atto": lambda: TimmForChestXray(
        CXRTimmConfig.from_preset("timm:convnext_atto", image_size=64, problem_type="single_label_classification")
    ),
}
NATIVE_CLASSES = {"beit": BeitForImageClassification, "timm_wrapper": TimmWrapperForImageClassification}


def _write_radiograph(path) -> None:
    """A non-square 8-bit grayscale PNG with smooth anatomy-like structure and some noise."""
    rows, cols = np.mgrid[0:90, 0:110] / np.array([90.0, 110.0])[:, None, None]
    lungs = np.exp(-(((cols - 0.3) / 0.15) ** 2 + ((rows - 0.5) / 0.3) ** 2)) + np.exp(
        -(((cols - 0.7) / 0.15) ** 2 + ((rows - 0.5) / 0.3) ** 2)
    )
    noise = np.random.default_rng(0).normal(0.0, 0.05, size=rows.shape)
    image = np.clip(0.8 - 0.6 * lungs + 0.2 * rows + noise, 0.0, 1.0)
    Image.fromarray((image * 255).round().astype(np.uint8), mode="L").save(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every case saved, exported, and run through a stock pipeline in one subprocess without the package."""
    root = tmp_path_factory.mktemp("export_native")
    png = root / "radiograph.png"
    _write_radiograph(png)
    models, outputs = {}, {}
    for name, build in CASES.items():
        model = randomize_(build()).eval()
        model.save_pretrained(root / name)
        models[name] = model
        outputs[name] = export_native(root / name, root / f"{name}-native")

    stdout = run_without_package(
        f"""
        import json, torch
        from transformers import pipeline
        from transformers.image_utils import load_image
        results = {{}}
        for name, out in {json.dumps({name: str(path) for name, path in outputs.items()})}.items():
            classify = pipeline("image-classification", model=out)
            scores = classify({str(png)!r}, top_k=classify.model.config.num_labels)
            # The pipeline's own preprocessing, so the test can run our model on exactly these pixels.
            pixels = classify.image_processor(images=load_image({str(png)!r}), return_tensors="pt")["pixel_values"]
            torch.save(pixels, {str(root)!r} + f"/{{name}}-pixels.pt")
            results[name] = {{
                "scores": {{entry["label"]: entry["score"] for entry in scores}},
                "model_module": type(classify.model).__module__,
                "processor": type(classify.image_processor).__name__,
            }}
        print(json.dumps(results))
        """,
        root,
    )
    results = json.loads(stdout.strip().splitlines()[-1])
    for name in CASES:
        results[name]["pixel_values"] = torch.load(root / f"{name}-pixels.pt")
    return {"root": root, "png": png, "models": models, "outputs": outputs, "results": results}


@pytest.mark.slow
def test_vit_cases_exercise_the_key_bias_drop(exported):
    model = exported["models"]["vit-mean"]
    k_bias = model.vit.layers[0].attention.qkv.bias.chunk(3)[1]
    assert k_bias.abs().min() > 0


@pytest.mark.parametrize("name", CASES)
def test_stock_pipeline_without_package_gives_our_probabilities(exported, name):
    model, result = exported["models"][name], exported["results"][name]
    assert result["model_module"].startswith("transformers.models.")
    pixel_values = result["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values).logits[0]
    if model.config.problem_type == "single_label_classification":
        probabilities = logits.softmax(-1)
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    else:
        probabilities = torch.sigmoid(logits)
    assert set(result["scores"]) == set(model.config.id2label.values())
    for index, label in model.config.id2label.items():
        assert result["scores"][label] == pytest.approx(probabilities[index].item(), abs=1e-5), label


@pytest.mark.parametrize("name", CASES)
def test_predict_reads_a_native_export_as_the_stock_pipeline_does(exported, name):
    model, processor = load_classifier(exported["outputs"][name])
    scores = predict_images(model, processor, decode_images([exported["png"]]))[str(exported["png"])]
    expected = exported["results"][name]["scores"]
    assert scores == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_stock_preprocessing_is_close_to_ours(exported, name):
    stock = exported["results"][name]["pixel_values"]
    ours = CXRImageProcessor.from_pretrained(exported["root"] / name)(str(exported["png"]), return_tensors="pt")
    ours = ours["pixel_values"]
    assert stock.shape == ours.shape
    difference = (stock - ours).abs()
    print(
        f"\n[{name}] stock {exported['results'][name]['processor']} vs CXRImageProcessor pixel_values: "
        f"max abs diff {difference.max().item():.4f}, mean abs diff {difference.mean().item():.5f} "
        f"(normalised units; one 8-bit level = {1 / 255 / 0.252:.4f})"
    )
    assert difference.max().item() <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_exported_logits_equal_ours(exported, name):
    model = exported["models"][name]
    native = AutoModelForImageClassification.from_pretrained(exported["outputs"][name]).eval()
    assert type(native) is NATIVE_CLASSES[native.config.model_type]
    pixel_values = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        difference = (native(pixel_values).logits - model(pixel_values).logits).abs().max().item()
    assert difference <= 1e-5


@pytest.mark.parametrize("name", CASES)
def test_export_is_stock_and_code_free(exported, name):
    out, model = exported["outputs"][name], exported["models"][name]
    assert not list(out.rglob("*.py"))
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config
    assert config["model_type"] == ("timm_wrapper" if name.startswith(("densenet", "timm")) else "beit")
    assert config["problem_type"] == model.config.problem_type
    native = AutoModelForImageClassification.from_pretrained(out)
    assert native.config.id2label == model.config.id2label
    assert native.config.label2id == model.config.label2id
    if config["model_type"] == "beit":
        assert not config["use_relative_position_bias"] and config["use_absolute_position_embeddings"]
        assert config["use_mean_pooling"] == model.config.use_mean_pooling
        processor_config = json.loads((out / "preprocessor_config.json").read_text())
        assert processor_config["image_processor_type"] == "ViTImageProcessor"
        assert "auto_map" not in processor_config
    else:
        assert config["architecture"] == getattr(model.config, "architecture", "densenet121")
        assert config["pretrained_cfg"]["input_size"] == [3, 64, 64]


def test_pretraining_checkpoint_is_refused(tmp_path):
    CXRViTMAEForPreTraining(tiny_vit_config()).save_pretrained(tmp_path / "pretrained")
    with pytest.raises(ValueError, match="only fine-tuned classifiers can be exported"):
        export_native(tmp_path / "pretrained", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_standard_densenet_is_refused(tmp_path):
    config = small_densenet_config(id2label={0: "a", 1: "b"})
    DenseNetForChestXray(config).save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="not one of timm's"):
        export_native(tmp_path / "model", tmp_path / "out")


def test_non_empty_output_dir_is_refused(tmp_path):
    _vit(num_hidden_layers=1).save_pretrained(tmp_path / "model")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "modeling_old.py").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        export_native(tmp_path / "model", tmp_path / "out")
