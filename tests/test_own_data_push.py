"""Publishing a model trained on the user's own data (patient data): the upload set holds no image derived from the
data, no patient or image identifier and no path of the training machine, and the card names the user's table, labels
and split policy, never a public corpus. The model directory is the fine-tuning recipe's own output on a `csv` corpus
(tests/own_data_helpers.py), pushed by the recipe to a local fake Hub and by `cxr-vitmae push --dry-run`."""

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from fake_hub import FakeHub
from huggingface_hub import ModelCard
from own_data_helpers import OWN_LABELS, own_options, write_own_corpus
from test_model_card import SECTIONS, TINY_VIT, make_fine_tuned_dir, make_pretraining_dir
from test_push import _recipe, hub, read_tree, run_recipes, uploaded_as_planned  # noqa: F401  (hub is a fixture)
from test_recipes import finetune_command

from cxr_vitmae import CXRViTMAEConfig, ViTMAEForChestXray
from cxr_vitmae.cli import main as cli
from cxr_vitmae.data import split_source
from cxr_vitmae.evaluation.figures import plot_reconstructions
from cxr_vitmae.evaluation.prediction import PREDICTIONS_FILE
from cxr_vitmae.hub.corpus_description import card_datasets
from cxr_vitmae.hub.model_card import phantom_examples
from cxr_vitmae.hub.provenance import write_training_args
from cxr_vitmae.hub.public_records import WITHHELD, public_record
from cxr_vitmae.hub.push import upload_set
from cxr_vitmae.training.arguments import FinetuneArguments, parse_recipe_arguments

REPO = "cxr-lab/own-data"
# What must never leave the training machine: the table's patient ids (MRNs) and image file names. The third, the
# test's temporary root (under which the corpus and the output directory lie), is added per test.
IDENTIFIERS = ("MRN-", "scan_")


@pytest.fixture(scope="module")
def own_root(tmp_path_factory) -> Path:
    return write_own_corpus(tmp_path_factory.mktemp("own"))


@pytest.fixture(scope="module")
def own_run(own_root, tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """The fine-tuning recipe's output directory on the own corpus, and what its `--push_to_hub` uploaded (to a local
    fake Hub: the recipe runs in its own process, as a user runs it)."""
    output_dir = tmp_path_factory.mktemp("runs") / "own-classifier"
    argv = finetune_command(own_root, output_dir, "--num_train_epochs", "1")[2:]
    argv += ["--dataset", "csv", "--dataset_options", json.dumps(own_options())]
    argv += ["--push_to_hub", "--hub_model_id", REPO]
    with FakeHub() as server:
        run_recipes([("finetune", argv)], server)
        pushed = uploaded_as_planned(server, output_dir, REPO)
    return output_dir, pushed


def readable(root: Path) -> dict[str, bytes]:
    """Every file under `root`, archives unpacked (the predictions .npz is a zip of .npy arrays)."""
    contents = {}
    for name, data in read_tree(root).items():
        if zipfile.is_zipfile(root / name):
            with zipfile.ZipFile(root / name) as archive:
                contents.update({f"{name}:{member}": archive.read(member) for member in archive.namelist()})
        else:
            contents[name] = data
    return contents


def holding(files: dict[str, bytes], text: str) -> list[str]:
    """The files whose bytes hold `text` in any encoding a JSON, Markdown or NumPy file may store it in."""
    encodings = ("utf-8", "utf-16-le", "utf-32-le")  # NumPy stores str arrays as UTF-32
    return sorted(name for name, data in files.items() if any(text.encode(e) in data for e in encodings))


def section(card: str, heading: str) -> str:
    start = card.index(heading)
    return card[start : card.index("\n## ", start + 1)]


@pytest.mark.slow
def test_the_upload_set_holds_nothing_of_the_patients(own_run, tmp_path_factory, tmp_path):
    model_dir, pushed = own_run
    assert cli(["push", str(model_dir), "--repo-id", REPO, "--dry-run", str(tmp_path / "dry-run")]) == 0
    dry_run = read_tree(tmp_path / "dry-run")
    secrets = (*IDENTIFIERS, str(tmp_path_factory.getbasetemp()))

    # The control: the model directory itself holds every one of them (image and patient ids in the predictions,
    # the corpus and output folders in training_args.json), so the checks below can fail.
    local = readable(model_dir)
    for secret in secrets:
        assert holding(local, secret), f"{secret!r} is not in the model directory: the check below proves nothing"
    assert (model_dir / PREDICTIONS_FILE).is_file()

    for files in (dry_run, pushed):  # `cxr-vitmae push --dry-run` and the recipe's `--push_to_hub`
        for secret in secrets:
            assert not holding(files, secret), f"{secret!r} uploaded in {holding(files, secret)}"
        # No image derived from the data: the plots of numbers, and the widget's synthetic phantoms, byte for byte.
        examples = {example.path_in_repo: example.png for example in phantom_examples()}
        images = {name for name, data in files.items() if data.startswith(b"\x89PNG") or name.endswith(".png")}
        assert images == {"figures/roc_test.png", "figures/training_curves.png", *examples}
        assert all(files[name] == png for name, png in examples.items())
        assert not any(name.endswith(".npz") for name in files)

    # The records are published without locations; the rest of them as the recipe wrote them.
    record = json.loads(dry_run["training_args.json"])
    written = json.loads((model_dir / "training_args.json").read_text())
    assert (record["data_dir"], record["output_dir"]) == (WITHHELD, WITHHELD)
    assert {key: value for key, value in record.items() if key not in ("data_dir", "output_dir")} == {
        key: value for key, value in written.items() if key not in ("data_dir", "output_dir")
    }
    assert record["dataset_options"] == own_options()  # the user's column names say how the labels were read
    # metrics.json holds no identifier and no path: it is published as written.
    assert dry_run["metrics.json"] == (model_dir / "metrics.json").read_bytes()
    assert dry_run["trainer_history.json"] == (model_dir / "trainer_history.json").read_bytes()


def test_the_card_names_the_users_table_labels_and_split_policy(own_run, own_root):
    pushed = own_run[1]
    card = pushed["README.md"].decode()
    metadata = yaml.safe_load(card.split("---\n", 2)[1])
    # No public corpus: no `datasets`, and results that name the user's data, not NIH (whose format the table's
    # phantoms were drawn in) nor `csv` as a Hub dataset.
    assert "datasets" not in metadata
    results = ModelCard(card).data.eval_results
    assert {(result.dataset_type, result.dataset_name) for result in results} == {
        ("cxr-vitmae-own-data", "the user's own data (image folder and label table)")
    }
    assert "fine-tuned on the user's own data (image folder and label table)" in card

    training = section(card, "## Training data")
    splits = {split: split_source("csv", split, own_root, **own_options()) for split in ("train", "validation", "test")}
    assert all("labels.csv" in source for source in splits.values())
    for split, source in splits.items():
        assert f"- `{split}`: {source}\n" in training + "\n"
    assert "patient data of the user who trained this model, and they are not published" in training
    columns = ", ".join(f"`{column}`" for column in OWN_LABELS)
    assert f"**Labels:** one finding per column (multi-label): {columns}; an uncertain (-1) cell is `ignore`" in (
        training
    )
    assert '- `patient_column`: `"MRN"`' in training

    evaluation = section(card, "## Evaluation")
    metrics = json.loads(pushed["metrics.json"])
    assert f"Evaluated on the held-out split `test` of the user's table ({splits['test']}), {metrics['n_images']} " in (
        " ".join(evaluation.split())
    )
    assert "not comparable with the paper's numbers" in " ".join(evaluation.split())
    limitations = section(card, "## Limitations and biases")
    assert "**Trained on the user's own data, which is not published**" in limitations
    assert "mined from radiology reports" not in limitations and "phantoms" not in limitations
    # NIH ChestX-ray14 appears only where the paper's own numbers are quoted.
    paper = section(card, SECTIONS[-2])
    assert "NIH" not in card.replace(paper, "")


def test_an_image_derived_from_own_data_is_refused(own_run, hub, tmp_path, capsys):  # noqa: F811
    model_dir = shutil.copytree(own_run[0], tmp_path / "model")
    images = torch.rand(2, 3, 32, 32)
    plot_reconstructions(images, images, images, model_dir / "figures" / "reconstruction_epoch001.png")
    capsys.readouterr()

    assert cli(["push", str(model_dir), "--repo-id", REPO]) == 1
    stderr = capsys.readouterr().err.strip()
    assert stderr.count("\n") == 0 and "Traceback" not in stderr
    assert str(model_dir / "figures" / "reconstruction_epoch001.png") in stderr
    assert "the user's own data (patient data)" in stderr
    assert not hub.requests, "nothing may reach the Hub"
    assert cli(["push", str(model_dir), "--repo-id", REPO, "--dry-run", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("dataset", "options", "named"),
    [
        ("folder", {}, ["the user's own data (patient data)"]),
        ("csv", own_options(), ["the user's own data (patient data)"]),
        ("pretrain-0.3m", {"folders": ["own"]}, ["CheXpert", "the user's own data (patient data)"]),
    ],
)
def test_pre_training_on_own_data_refuses_push_to_hub_before_training(dataset, options, named, tmp_path):
    pretrain = _recipe("pretrain")
    argv = ["--output_dir", str(tmp_path / "out"), "--data_dir", str(tmp_path / "no-data"), "--dataset", dataset]
    argv += ["--dataset_options", json.dumps(options), "--push_to_hub", "--hub_model_id", REPO]
    with pytest.raises(SystemExit, match="reconstruction figures .* may not be published") as refusal:
        pretrain.main(argv)
    message = str(refusal.value)
    assert "\n" not in message and all(name in message for name in named), message
    assert not (tmp_path / "out").exists()  # refused before anything was read or written


def test_fine_tuned_on_own_data_from_the_papers_union(own_root, tmp_path):
    """The card tells both: the user's table for fine-tuning, X-rays 0.3M for the encoder (whose corpora it lists)."""
    encoder = make_pretraining_dir(tmp_path / "encoder", None, "--dataset", "pretrain-0.3m", steps=3780)
    classifier = tmp_path / "classifier"
    labels = {"id2label": dict(enumerate(OWN_LABELS)), "problem_type": "multi_label_classification"}
    ViTMAEForChestXray(CXRViTMAEConfig.from_preset("vit-tiny", **TINY_VIT, **labels)).save_pretrained(classifier)
    argv = ["--output_dir", str(classifier), "--model", str(encoder), "--dataset", "csv", "--data_dir", str(own_root)]
    args = parse_recipe_arguments(FinetuneArguments, [*argv, "--dataset_options", json.dumps(own_options())])
    write_training_args(classifier, args, recipe="finetune", n_train_images=58)

    files = upload_set(classifier, REPO)
    card = files["README.md"].decode()
    assert (
        "fine-tuned on the user's own data (image folder and label table) from an MAE encoder pre-trained on "
        "X-rays 0.3M (NIH ChestX-ray14 + CheXpert) with the recipe"
    ) in " ".join(card.split())
    assert "started from a model directory not published on the Hub, an encoder MAE pre-trained by " in card
    assert ModelCard(card).data.datasets == ["chexpert", "nih-chestxray14"]  # the encoder's images
    assert "labels.csv minus the carved patients" in section(card, "## Training data")
    assert "**Trained on the user's own data, which is not published**" in section(card, "## Limitations and biases")
    # The starting directory's path is its name only.
    record = json.loads(files["training_args.json"])
    assert record["model"] == "encoder" and record["data_dir"] == WITHHELD
    published = {name: data if isinstance(data, bytes) else data.read_bytes() for name, data in files.items()}
    assert holding(published, str(tmp_path)) == [] and holding(read_tree(classifier), str(tmp_path))


def test_a_classifier_started_from_an_encoder_pre_trained_on_own_data(own_root, tmp_path):
    """Fine-tuned on NIH from an encoder pre-trained on the user's folder: the lineage holds own data, so its records
    are published without paths (the encoder's `exclude` list included), and the card says where the encoder came
    from without listing the user's data as a dataset."""
    exclude = tmp_path / "keep-out.txt"
    exclude.write_text("MRN-000001\n")
    options = json.dumps({"exclude": str(exclude)})
    encoder = make_pretraining_dir(
        tmp_path / "encoder", own_root / "scans", "--dataset", "folder", "--dataset_options", options
    )
    classifier = make_fine_tuned_dir(tmp_path / "classifier", encoder)

    files = upload_set(classifier, REPO)
    record = json.loads(files["training_args.json"])
    assert record["base_model_run"]["dataset_options"] == {"exclude": "keep-out.txt"}
    assert record["output_dir"] == WITHHELD
    published = {name: data if isinstance(data, bytes) else data.read_bytes() for name, data in files.items()}
    assert holding(published, str(tmp_path)) == [] and holding(read_tree(classifier), str(tmp_path))
    card = files["README.md"].decode()
    assert "MAE pre-trained by `recipes/pretrain.py` on the user's own data (unlabelled image folder)" in card
    assert ModelCard(card).data.datasets == ["nih-chestxray14"]
    limitations = section(card, "## Limitations and biases")
    assert "**The starting model was pre-trained on the user's own radiographs**" in limitations
    assert "mined from radiology reports by NLP" in limitations  # fine-tuned on NIH: its labels' limitations


def test_a_hub_dataset_is_listed_and_a_local_folder_is_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exports" / "cxr").mkdir(parents=True)
    run = {"dataset": "hf", "dataset_options": {"path": "cxr-lab/own-radiographs"}}
    assert card_datasets([run]) == ["cxr-lab/own-radiographs"]
    for local in ("/data/own/cxr", "./cxr", "~/cxr", "exports/cxr", "C:\\exports\\cxr"):
        assert card_datasets([{"dataset": "hf", "dataset_options": {"path": local}}]) is None, local
    assert card_datasets([{"dataset": "csv", "dataset_options": {"table": "labels.csv"}}]) is None


def test_public_records_cut_paths_and_keep_the_rest():
    record = {
        "data_dir": "/srv/icu exports",
        "resume_from_checkpoint": "latest",
        "model": "/home/jdoe/runs/encoder",
        "base_model": None,
        "dataset_options": {"table": "/srv/icu exports/labels.csv", "folders": ["own", "/mnt/ward b"]},
        "split_source": "25% of /srv/icu exports/labels.csv's patients; views AP/PA, cells 1/0/-1, train / validation",
        "checkpoint": "C:\\Users\\jdoe\\model",
        "base_model_run": {"model": "vit-tiny", "output_dir": "runs/pre", "hub_model_id": "cxr-lab/enc"},
    }
    assert public_record(record) == {
        "data_dir": WITHHELD,
        "resume_from_checkpoint": WITHHELD,
        "model": "encoder",
        "base_model": None,
        "dataset_options": {"table": "labels.csv", "folders": ["own", "ward b"]},
        "split_source": "25% of labels.csv's patients; views AP/PA, cells 1/0/-1, train / validation",
        "checkpoint": "model",
        "base_model_run": {"model": "vit-tiny", "output_dir": WITHHELD, "hub_model_id": "cxr-lab/enc"},
    }
    # A starting model its run published is named by its Hub id.
    assert public_record({"model": "/runs/encoder", "base_model": "cxr-lab/enc"})["model"] == "cxr-lab/enc"
