"""Model cards: one template per kind of model, a model-index that is metrics.json, usage snippets that run."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard
from model_helpers import run_without_package

from cxr_vitmae import (
    CXRDenseNetConfig,
    CXRDenseNetModel,
    CXRTimmConfig,
    CXRViTMAEConfig,
    CXRViTMAEForPreTraining,
    CXRViTMAEModel,
    DenseNetForChestXray,
    TimmForChestXray,
    ViTMAEForChestXray,
)
from cxr_vitmae.data import label_names
from cxr_vitmae.data.phantoms import generate_phantoms, phantom_record
from cxr_vitmae.evaluation.metrics import classification_metrics
from cxr_vitmae.hub.model_card import PAPER_RESULTS, TEMPLATES_DIR, build_model_card, card_kinds, phantom_examples
from cxr_vitmae.hub.provenance import starting_run, write_training_args
from cxr_vitmae.hub.push import upload_set, write_upload_set
from cxr_vitmae.training.arguments import FinetuneArguments, PretrainArguments, parse_recipe_arguments

SECTIONS = (
    "## Model description",
    "## How to use",
    "## Intended use",
    "## Out-of-scope use",
    "## Training data",
    "## Preprocessing",
    "## Evaluation",
    "## Limitations and biases",
    "## Results reported in the paper (not measured with this checkpoint)",
    "## Citation",
)
TINY_VIT = {"image_size": 32, "patch_size": 8, "num_hidden_layers": 2}
# What the recipes write; a backbone (no head, no decoder) only comes from `convert`.
TRAINED_KINDS = [kind for kind in card_kinds() if kind != "backbone"]


def make_model_dir(path: Path, kind: str, dataset: str = "nih-chestxray14") -> Path:
    """A saved tiny model of `kind` with what its recipe writes: training_args.json, and for classifiers a
    metrics.json computed by the evaluation code on random scores (one class without positives)."""
    if kind == "pretrained-encoder":
        CXRViTMAEForPreTraining(CXRViTMAEConfig.from_preset("vit-tiny", **TINY_VIT)).save_pretrained(path)
        args = parse_recipe_arguments(
            PretrainArguments, ["--output_dir", str(path), "--dataset", dataset, "--model", "vit-tiny"]
        )
        write_training_args(path, args, recipe="pretrain", n_train_images=321, global_batch_size=8)
        return path

    names = label_names(dataset)
    labels = {"id2label": dict(enumerate(names)), "problem_type": "multi_label_classification"}
    if kind == "vit-classifier":
        model = ViTMAEForChestXray(CXRViTMAEConfig.from_preset("vit-tiny", **TINY_VIT, **labels))
        preset = "vit-tiny"
    elif kind == "timm-classifier":
        preset = "timm:resnet10t"
        model = TimmForChestXray(CXRTimmConfig.from_preset(preset, image_size=32, **labels))
    else:
        model = DenseNetForChestXray(
            CXRDenseNetConfig.from_preset("densenet121", image_size=32, block_config=(1, 1, 1, 1), **labels)
        )
        preset = "densenet121"
    model.save_pretrained(path)
    args = parse_recipe_arguments(
        FinetuneArguments,
        ["--output_dir", str(path), "--dataset", dataset, "--model", preset, "--dataset_options", "{}"],
    )
    write_training_args(path, args, recipe="finetune", n_train_images=123, global_batch_size=8)

    rng = np.random.default_rng(len(names))
    targets = (rng.random((80, len(names))) < 0.3).astype(np.float32)
    targets[:, -1] = 0.0  # no positives: undefined AUROC / AUPRC
    scores = np.clip(targets * 0.3 + rng.random(targets.shape) * 0.7, 0, 1)
    metrics = classification_metrics(
        scores, targets, label_names=names, patient_ids=np.arange(80) // 2, n_bootstrap=40, seed=1
    )
    record = {"dataset": dataset, "split": "test", **metrics, "selected_by": "validation mean_auroc"}
    (path / "metrics.json").write_text(json.dumps({**record, "checkpoint": "epoch-2"}, indent=2))
    return path


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def model_index_values(card: ModelCard) -> dict[tuple[str, str | None], float]:
    return {(result.metric_type, result.metric_config): result.metric_value for result in card.data.eval_results}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    return {kind: make_model_dir(root / kind, kind) for kind in TRAINED_KINDS}


@pytest.fixture(scope="module")
def examples():
    return phantom_examples()


@pytest.mark.parametrize("kind", TRAINED_KINDS)
def test_card_for_each_kind(model_dirs, examples, kind, tmp_path):
    card = build_model_card(model_dirs[kind], "cxr-lab/tiny", examples=examples, figures=["figures/roc_test.png"])
    card.save(tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    metadata = front_matter(text)

    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == card_kinds()[kind][1]
    assert metadata["license"] == "cc-by-nc-4.0"
    assert metadata["datasets"] == ["nih-chestxray14"]
    assert {"medical-imaging", "chest-x-ray", "cxr-vitmae"} <= set(metadata["tags"])
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions), "sections out of order"
    assert "not a medical device" in text and "export-native" in text and "from_pretrained" in text
    assert "Xiao, Junfei and Bai, Yutong and Yuille, Alan and Zhou, Zongwei" in text and "WACV" in text
    paper = text[text.index(SECTIONS[-2]) : text.index(SECTIONS[-1])]
    rows = PAPER_RESULTS["densenet" if kind in ("densenet-classifier", "timm-classifier") else "vit"]
    if kind == "timm-classifier":
        assert "convolutional baseline is DenseNet-121" in paper and "timm `resnet10t`" in text
    assert all(f"| {model} | {pretraining} | {nih} |" in paper for model, pretraining, nih, _, _ in rows)
    assert "321 training images" in text or "123 training images" in text
    assert "![figures/roc_test.png](figures/roc_test.png)" in text
    # Trained on the real corpus's loader with no phantoms: the real corpora's limitations, none of the phantoms'.
    limitations = text[text.index("## Limitations and biases") : text.index(SECTIONS[-2])]
    assert "mined from radiology reports by NLP" in limitations and "**Site and view shift:**" in limitations
    assert "phantoms" not in limitations

    if kind == "pretrained-encoder":
        assert "widget" not in metadata and "model-index" not in metadata
        assert "AutoModelForPreTraining" in text
    else:
        assert [entry["src"] for entry in metadata["widget"]] == [
            f"https://huggingface.co/cxr-lab/tiny/resolve/main/{example.path_in_repo}" for example in examples
        ]
        assert all(entry["example_title"].startswith("Synthetic phantom") for entry in metadata["widget"])
        assert "`examples/phantom_example_*.png`" in text
        assert metadata["model-index"][0]["name"] == "tiny"
        assert ModelCard.load(tmp_path / "README.md").data.eval_results


@pytest.mark.parametrize("kind", ["vit-classifier", "densenet-classifier"])
def test_model_index_is_metrics_json(model_dirs, kind, tmp_path):
    build_model_card(model_dirs[kind], "cxr-lab/tiny").save(tmp_path / "README.md")
    card = ModelCard.load(tmp_path / "README.md")
    metrics = json.loads((model_dirs[kind] / "metrics.json").read_text())

    expected = {("roc_auc", None): metrics["mean_auroc"], ("average_precision", None): metrics["mean_auprc"]}
    for name, values in metrics["per_class"].items():
        if values["auroc"] is not None:
            expected[("roc_auc", name)] = values["auroc"]
            expected[("average_precision", name)] = values["auprc"]
    assert metrics["undefined"], "the fixture should hold a class without AUROC"
    assert model_index_values(card) == expected
    result = card.data.eval_results[0]
    assert (result.dataset_type, result.dataset_split, result.task_type) == (
        "nih-chestxray14",
        "test",
        "image-classification",
    )


def test_evaluation_table_has_every_class_with_its_intervals(model_dirs):
    text = build_model_card(model_dirs["vit-classifier"], "cxr-lab/tiny").content
    metrics = json.loads((model_dirs["vit-classifier"] / "metrics.json").read_text())
    for name, values in metrics["per_class"].items():
        if values["auroc"] is None:
            expected = f"| {name} | undefined | — | undefined | — | {values['n_pos']} | {values['n_neg']} |"
        else:
            low, high = values["auroc_ci95"]
            expected = f"| {name} | {values['auroc']:.3f} | [{low:.3f}, {high:.3f}] | {values['auprc']:.3f} |"
        assert expected in text, expected
    low, high = metrics["mean_auroc_ci95"]
    assert f"**Mean AUROC:** {metrics['mean_auroc']:.3f} [{low:.3f}, {high:.3f}]" in text
    assert f"{metrics['n_images']} images" in text and "percentile bootstrap over\npatients" in text


def test_training_data_states_split_and_label_policies(tmp_path):
    model_dir = make_model_dir(tmp_path / "chexpert", "vit-classifier", dataset="chexpert")
    text = build_model_card(model_dir, "cxr-lab/chexpert").content
    # The CheXpert builder's defaults, filled in: the paper's per-class uncertainty policy and blank handling.
    assert '- `uncertainty`: `{"Cardiomegaly": "zeros", "Edema": "ones"' in text
    assert '- `blank`: `"zeros"`' in text and '- `views`: `"frontal"`' in text
    assert "CheXpert (Stanford Research Use Agreement) may not be redistributed" in text


def test_local_paths_stay_off_the_card(tmp_path):
    model_dir = make_model_dir(tmp_path / "pre", "pretrained-encoder", dataset="pretrain-0.3m")
    record = json.loads((model_dir / "training_args.json").read_text())
    record["dataset_options"] = {"nih_dir": "/secret/nih", "chexpert_dir": "/secret/chexpert"}
    (model_dir / "training_args.json").write_text(json.dumps(record))
    card = build_model_card(model_dir, "cxr-lab/pre")
    assert "/secret" not in card.content and "- `nih_dir`: `(set to a local path)`" in card.content
    assert card.data.datasets == ["chexpert", "nih-chestxray14"]


def test_a_cxr_vitmae_evaluate_record_claims_no_selection_and_shows_no_path(tmp_path):
    # `cxr-vitmae evaluate` records the directory it was given and selects nothing.
    model_dir = make_model_dir(tmp_path / "vit", "vit-classifier")
    record = json.loads((model_dir / "metrics.json").read_text())
    record.update(checkpoint="/secret/runs/vit-final", selected_by=None)
    (model_dir / "metrics.json").write_text(json.dumps(record))
    card = build_model_card(model_dir, "cxr-lab/vit").content
    assert "/secret" not in card and "checkpoint `vit-final`" in card
    assert "selected" not in card.split("## Training procedure")[1].split("##")[0]


def test_the_card_names_the_pooling_the_model_uses(tmp_path):
    model_dir = make_model_dir(tmp_path / "vit", "vit-classifier")
    assert "mean-pooled patch tokens → LayerNorm" in build_model_card(model_dir, "cxr-lab/vit").content
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "use_mean_pooling": False}))
    card = build_model_card(model_dir, "cxr-lab/vit").content
    assert "the CLS token → LayerNorm" in card and "mean-pooled" not in card


def test_base_model_comes_from_the_published_starting_model(tmp_path):
    encoder = make_model_dir(tmp_path / "encoder", "pretrained-encoder")
    record = json.loads((encoder / "training_args.json").read_text())
    (encoder / "training_args.json").write_text(
        json.dumps({**record, "push_to_hub": True, "hub_model_id": "cxr-lab/encoder"})
    )
    classifier = tmp_path / "classifier"
    ViTMAEForChestXray(CXRViTMAEConfig.from_preset("vit-tiny", **TINY_VIT)).save_pretrained(classifier)
    args = parse_recipe_arguments(FinetuneArguments, ["--output_dir", str(classifier), "--model", str(encoder)])
    write_training_args(classifier, args, recipe="finetune", n_train_images=10)
    assert json.loads((classifier / "training_args.json").read_text())["base_model_run"]["hub_model_id"] == (
        "cxr-lab/encoder"
    )
    card = build_model_card(classifier, "cxr-lab/classifier")
    assert card.data.base_model == "cxr-lab/encoder"
    assert (
        "started from `cxr-lab/encoder`, an encoder MAE pre-trained by `recipes/pretrain.py` on NIH ChestX-ray14 "
        "(321 training images)"
    ) in card.content
    assert "from an MAE encoder pre-trained on NIH ChestX-ray14" in card.content


def make_pretraining_dir(path: Path, data_dir: Path | None, *flags: str, steps: int = 40) -> Path:
    """A pre-training output_dir as recipes/pretrain.py leaves it: the encoder, its training_args.json and the
    trainer history (whose last record is the step the run ended at)."""
    CXRViTMAEForPreTraining(CXRViTMAEConfig.from_preset("vit-tiny", **TINY_VIT)).save_pretrained(path)
    argv = ["--output_dir", str(path), "--model", "vit-tiny", "--mask_ratio", "0.75", "--crop_scale_min", "0.2"]
    argv += ["--data_dir", str(data_dir)] if data_dir else []
    args = parse_recipe_arguments(PretrainArguments, [*argv, *flags])
    write_training_args(path, args, recipe="pretrain", n_train_images=9, global_batch_size=8)
    history = [{"step": steps // 2, "epoch": 4.0, "train_loss": 0.3}, {"step": steps, "epoch": 8.0, "train_loss": 0.2}]
    (path / "trainer_history.json").write_text(json.dumps(history))
    return path


def make_fine_tuned_dir(path: Path, start: Path, data_dir: Path | None = None) -> Path:
    ViTMAEForChestXray(CXRViTMAEConfig.from_preset("vit-tiny", **TINY_VIT)).save_pretrained(path)
    argv = ["--output_dir", str(path), "--model", str(start)] + (["--data_dir", str(data_dir)] if data_dir else [])
    write_training_args(path, parse_recipe_arguments(FinetuneArguments, argv), recipe="finetune", n_train_images=10)
    return path


def test_a_fine_tuned_card_tells_its_unpublished_pre_training_run(tmp_path):
    """The pre-training run (corpus, steps, mask ratio) is copied into the fine-tuning record at training time, so
    the card tells it after the pre-training directory is gone; with no Hub id, `base_model` stays empty."""
    phantoms = generate_phantoms(tmp_path / "phantoms", 12, size=32, seed=4).output_dir
    encoder = make_pretraining_dir(tmp_path / "encoder", phantoms)
    classifier = make_fine_tuned_dir(tmp_path / "classifier", encoder)  # fine-tuned on the real NIH loader
    shutil.rmtree(encoder)  # the card is built elsewhere, without the starting directory
    lineage = (
        "an encoder MAE pre-trained by `recipes/pretrain.py` on synthetic phantoms in NIH ChestX-ray14's format "
        "(9 training images), 40 optimiser steps (8 epochs) at global batch 8, mask ratio 0.75, random resized crops "
        "of scale 0.2-1, at 224 px, from the `vit-tiny` preset, randomly initialised"
    )

    build_model_card(classifier, "cxr-lab/classifier").save(tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    assert "base_model" not in front_matter(text)
    assert f"Recipe `recipes/finetune.py`, started from a model directory not published on the Hub, {lineage}." in text
    assert "fine-tuned on NIH ChestX-ray14 from an MAE encoder pre-trained on synthetic phantoms" in text
    # Fine-tuned on a real corpus: its limitations, plus what phantom pre-training means.
    limitations = text[text.index("## Limitations and biases") : text.index(SECTIONS[-2])]
    assert "mined from radiology reports by NLP" in limitations
    assert "**The starting model was pre-trained on synthetic phantoms**" in limitations
    assert front_matter(text)["datasets"] == ["nih-chestxray14"]  # phantoms add no corpus

    # `cxr-vitmae push --base-model` names a Hub copy: metadata and prose say it.
    card = build_model_card(classifier, "cxr-lab/classifier", base_model="cxr-lab/encoder-copy")
    assert card.data.base_model == "cxr-lab/encoder-copy"
    assert f"started from `cxr-lab/encoder-copy`, {lineage}." in card.content
    with pytest.raises(ValueError, match="not a Hub model id"):
        build_model_card(classifier, "cxr-lab/classifier", base_model="./runs/encoder")


def test_a_pre_training_on_a_real_corpus_adds_its_corpus_to_the_card(tmp_path):
    encoder = make_pretraining_dir(tmp_path / "encoder", None, "--dataset", "pretrain-0.3m", steps=3780)
    classifier = make_fine_tuned_dir(tmp_path / "classifier", encoder)
    card = build_model_card(classifier, "cxr-lab/classifier")
    assert "MAE pre-trained by `recipes/pretrain.py` on X-rays 0.3M" in card.content
    assert "3,780 optimiser steps (8 epochs)" in card.content
    assert card.data.datasets == ["chexpert", "nih-chestxray14"]
    assert "CheXpert (Stanford Research Use Agreement) may not be redistributed" in card.content
    assert "pre-trained on synthetic phantoms" not in card.content


def test_the_starting_run_is_recorded_only_for_a_recipe_directory(tmp_path):
    converted = tmp_path / "converted"  # e.g. `cxr-vitmae convert` output: no training_args.json
    CXRViTMAEForPreTraining(CXRViTMAEConfig.from_preset("vit-tiny", **TINY_VIT)).save_pretrained(converted)
    assert starting_run("vit-tiny") is None and starting_run(str(converted)) is None
    card = build_model_card(make_fine_tuned_dir(tmp_path / "classifier", converted), "cxr-lab/c").content
    assert "started from a local model directory whose training is not recorded." in card
    assert "pre-trained by" not in card


def test_widget_examples_cannot_be_mistaken_for_corpus_files(examples, tmp_path):
    corpus = generate_phantoms(tmp_path / "phantoms", len(examples), size=256, seed=0, difficulty="easy")
    assert any(image.finding_labels != "No Finding" for image in corpus.images)
    for number, (example, image) in enumerate(zip(examples, corpus.images, strict=True), start=1):
        name = Path(example.path_in_repo).name
        assert not re.search(r"\d{8}_\d{3}", name) and image.file_name not in example.path_in_repo
        assert re.fullmatch(rf"examples/phantom_example_{number}_[a-z_]+\.png", example.path_in_repo)
        assert example.png == (corpus.output_dir / "images" / image.file_name).read_bytes()
        if image.finding_labels == "No Finding":
            assert example.title == f"Synthetic phantom {number}: no finding drawn" and name.endswith("no_finding.png")
        else:
            findings = image.finding_labels.split("|")
            assert example.title == f"Synthetic phantom {number}: drawn {', '.join(findings).replace('_', ' ')}"
            assert all(finding.lower() in name for finding in findings)


def test_not_a_cxr_vitmae_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="model_type 'vit'"):
        build_model_card(tmp_path, "cxr-lab/x")


def test_templates_are_package_data():
    from importlib.resources import files

    for template, _ in card_kinds().values():
        assert (files("cxr_vitmae.hub") / "model_cards" / template).is_file()
        assert (TEMPLATES_DIR / template).read_text().startswith("---\n{{ card_data }}\n---\n")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vit-classifier", "densenet-classifier"])
def test_classifier_snippets_run_from_the_published_files_without_the_package(model_dirs, kind, tmp_path):
    """The card's transformers-only snippets, pointed at a copy of exactly what would be uploaded."""
    published = write_upload_set(upload_set(model_dirs[kind], "cxr-lab/tiny"), tmp_path / "repo")
    corpus = generate_phantoms(tmp_path / "phantoms", 1, size=64, seed=2)
    (tmp_path / "chest_xray.png").write_bytes((corpus.output_dir / "images" / corpus.images[0].file_name).read_bytes())
    snippets = python_blocks((published / "README.md").read_text())[:2]
    script = "\n".join(snippets).replace('"cxr-lab/tiny"', repr(str(published)))

    output = run_without_package(script, tmp_path)
    names = label_names("nih-chestxray14")
    # The pipeline lists every finding, and so does the from_pretrained snippet's dict.
    assert all(output.count(f"'{name}'") == 2 for name in names), output


def test_encoder_snippets_run(model_dirs, tmp_path, monkeypatch):
    published = write_upload_set(upload_set(model_dirs["pretrained-encoder"], "cxr-lab/enc"), tmp_path / "repo")
    corpus = generate_phantoms(tmp_path / "phantoms", 1, size=64, seed=2)
    (tmp_path / "chest_xray.png").write_bytes((corpus.output_dir / "images" / corpus.images[0].file_name).read_bytes())
    monkeypatch.chdir(tmp_path)
    fine_tune, features, reconstruction = [
        snippet.replace('"cxr-lab/enc"', repr(str(published)))
        for snippet in python_blocks((published / "README.md").read_text())
    ]
    patches = (32 // 8) ** 2

    namespace = {}
    exec(fine_tune, namespace)
    assert type(namespace["model"]).__name__ == "ViTMAEForChestXray"
    assert namespace["model"].config.id2label == dict(enumerate(label_names("nih-chestxray14")))
    exec(features, namespace)
    assert np.array(namespace["tokens"]).shape == (1, 1 + patches, 192)
    exec(reconstruction, namespace)
    assert type(namespace["model"]).__name__ == "CXRViTMAEForPreTraining"
    assert namespace["outputs"].mask.shape == (1, patches)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vit", "densenet"])
def test_a_backbone_gets_a_feature_extraction_card_whose_snippets_run(family, tmp_path, monkeypatch):
    # What `convert` writes for encoder-only checkpoints (timm ports, the paper's DenseNet U-Net MAE): no head, so no
    # classification widget, labels or scores on the card.
    if family == "vit":
        CXRViTMAEModel(CXRViTMAEConfig.from_preset("vit-tiny", **TINY_VIT)).save_pretrained(tmp_path / "model")
    else:
        config = CXRDenseNetConfig.from_preset("densenet121", image_size=32, block_config=(1, 1, 1, 1))
        CXRDenseNetModel(config).save_pretrained(tmp_path / "model")
    published = write_upload_set(upload_set(tmp_path / "model", "cxr-lab/backbone"), tmp_path / "repo")
    text = (published / "README.md").read_text()
    metadata = front_matter(text)
    assert metadata["pipeline_tag"] == "image-feature-extraction"
    assert "widget" not in metadata and "model-index" not in metadata and not list(published.glob("examples/*"))
    assert "Cardiomegaly" not in text and "probability" not in text
    assert [text.index(section) for section in SECTIONS] == sorted(text.index(section) for section in SECTIONS)

    corpus = generate_phantoms(tmp_path / "phantoms", 1, size=64, seed=2)
    (tmp_path / "chest_xray.png").write_bytes((corpus.output_dir / "images" / corpus.images[0].file_name).read_bytes())
    features, fine_tune = [
        snippet.replace('"cxr-lab/backbone"', repr(str(published))) for snippet in python_blocks(text)
    ]
    script = features + "\nimport json\nprint(json.dumps([type(model).__name__, list(features.shape)]))\n"
    name, shape = json.loads(run_without_package(script, tmp_path).strip().splitlines()[-1])
    assert name == ("CXRViTMAEModel" if family == "vit" else "CXRDenseNetModel")
    assert len(shape) == (3 if family == "vit" else 4)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(fine_tune, namespace)
    assert type(namespace["model"]).__name__ == ("ViTMAEForChestXray" if family == "vit" else "DenseNetForChestXray")


def test_results_on_phantoms_are_labelled_as_phantoms(tmp_path):
    phantoms = generate_phantoms(tmp_path / "phantoms", 12, size=32, seed=4).output_dir
    model_dir = make_model_dir(tmp_path / "model", "vit-classifier")
    record = phantom_record(phantoms)
    for name in ("training_args.json", "metrics.json"):
        path = model_dir / name
        path.write_text(json.dumps({**json.loads(path.read_text()), "synthetic_corpus": record}))
    build_model_card(model_dir, "cxr-lab/tiny").save(tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    card = ModelCard.load(tmp_path / "README.md")

    assert "datasets" not in front_matter(text)  # phantoms borrow NIH's format, not its images
    assert {(result.dataset_type, result.dataset_name) for result in card.data.eval_results} == {
        ("cxr-vitmae-phantoms", "synthetic phantoms in NIH ChestX-ray14's format")
    }
    assert "Measured on **synthetic phantoms in NIH ChestX-ray14's format**" in text
    assert "12 synthetic chest radiographs drawn by `cxr-vitmae phantoms` (32 px, seed 4" in text
    assert "112,120 frontal radiographs" not in text and "Measured on **NIH ChestX-ray14**" not in text
    # Limitations for what it was trained on: synthetic findings without clinical meaning, numbers not comparable.
    limitations = text[text.index("## Limitations and biases") : text.index(SECTIONS[-2])]
    assert "**Trained on synthetic phantoms, not radiographs.**" in limitations
    assert "no clinical\n  meaning" in limitations and "never seen a patient's radiograph" in limitations
    assert "**Its numbers are not comparable with the paper's**" in limitations
    assert "mined from radiology reports" not in limitations and "**Site and view shift:**" not in limitations


def test_an_encoder_pre_trained_on_phantoms_says_so_in_its_limitations(tmp_path):
    phantoms = generate_phantoms(tmp_path / "phantoms", 12, size=32, seed=4).output_dir
    text = build_model_card(make_pretraining_dir(tmp_path / "encoder", phantoms), "cxr-lab/enc").content
    limitations = text[text.index("## Limitations and biases") : text.index(SECTIONS[-2])]
    assert "**Pre-trained on synthetic phantoms, not radiographs.**" in limitations
    assert "**Not comparable with the paper's encoders:**" in limitations
    assert "mined from radiology reports" not in limitations and "**Site and view shift:**" not in limitations
