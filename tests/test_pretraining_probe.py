"""The pre-training diagnostics: held-out reconstruction against trivial predictors, the encoder probe against a
random encoder, their records in a real pre-training run (resumed and not), and their panels of the training curves."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from model_helpers import assert_readable_png, randomize_, tiny_vit_config
from PIL import Image
from safetensors.torch import load_file

from cxr_vitmae.data.phantoms import generate_phantoms
from cxr_vitmae.data.transforms import evaluation_transform
from cxr_vitmae.evaluation.figures import _training_figure, plot_training_curves
from cxr_vitmae.evaluation.pretraining_diagnostics import (
    encoder_features,
    evaluation_pixels,
    mean_training_image,
    probe_difference,
    probe_encoder,
    probe_features,
    random_encoder,
    reconstruction_baselines,
)
from cxr_vitmae.models import CXRViTMAEForPreTraining
from cxr_vitmae.training.pretraining_monitor import patient_sample, scorable_labels

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RECONSTRUCTION_KEYS = ("heldout_mae_loss", "heldout_visible_mean_loss", "heldout_mean_image_loss")


def tiny_mae(norm_pix_loss: bool = False) -> CXRViTMAEForPreTraining:
    config = tiny_vit_config(patch_size=8, num_hidden_layers=2, mask_ratio=0.75, norm_pix_loss=norm_pix_loss)
    return randomize_(CXRViTMAEForPreTraining(config))


# --------------------------------------------------------------------------------------------------------------
# Reconstruction against trivial predictors


@pytest.mark.parametrize("norm_pix_loss", [False, True], ids=["pixels", "norm-pix"])
def test_the_mae_value_is_the_models_own_loss_and_nothing_else_changes(norm_pix_loss):
    model = tiny_mae(norm_pix_loss).train()
    generator = torch.Generator().manual_seed(5)
    pixels = torch.randn(7, 3, 32, 32, generator=generator)
    noise = torch.rand(7, model.config.num_patches, generator=generator)
    rng_state = torch.get_rng_state()
    # Batches of 3 over 7 images: the average must still be the one over every masked patch of all images.
    values = reconstruction_baselines(model, pixels, noise, torch.zeros(3, 32, 32), batch_size=3)
    assert model.training  # put back in the mode it was in
    assert torch.equal(torch.get_rng_state(), rng_state)  # the training stream is left alone
    with torch.no_grad():
        expected = model.eval()(pixels, noise=noise).loss.item()
    assert values["mae"] == pytest.approx(expected, rel=1e-5)


def per_image_losses(pixels: np.ndarray, noise: np.ndarray, mean: np.ndarray, patch: int, ratio: float, norm: bool):
    """The two trivial predictors, written out image by image and patch by patch in numpy."""

    def normalised(values: np.ndarray) -> np.ndarray:
        return (values - values.mean()) / np.sqrt(values.var(ddof=1) + 1e-6)

    grid = pixels.shape[-1] // patch
    n_keep = int(grid * grid * (1 - ratio))
    errors = {"visible_mean": [], "mean_image": []}
    for image, image_noise in zip(pixels, noise, strict=True):
        kept = set(np.argsort(image_noise)[:n_keep].tolist())
        blocks = [
            (index, np.s_[:, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch])
            for index, (row, col) in enumerate((r, c) for r in range(grid) for c in range(grid))
        ]
        visible = np.concatenate([image[where].reshape(image.shape[0], -1) for i, where in blocks if i in kept], 1)
        channel_mean = visible.mean(axis=1)
        for index, where in blocks:
            if index in kept:
                continue
            target = image[where]
            guesses = {
                "visible_mean": np.broadcast_to(channel_mean[:, None, None], target.shape),
                "mean_image": mean[where],
            }
            for name, guess in guesses.items():
                if norm:
                    errors[name].append(np.mean((normalised(guess.ravel()) - normalised(target.ravel())) ** 2))
                else:
                    errors[name].append(np.mean((guess - target) ** 2))
    return {name: float(np.mean(values)) for name, values in errors.items()}


@pytest.mark.parametrize("norm_pix_loss", [False, True], ids=["pixels", "norm-pix"])
@pytest.mark.parametrize("gray", [True, False], ids=["gray", "colour"])
def test_the_trivial_predictors_match_a_per_image_implementation(norm_pix_loss, gray):
    model = tiny_mae(norm_pix_loss)
    generator = torch.Generator().manual_seed(int(norm_pix_loss) + 2 * int(gray))
    pixels = torch.randn(5, 1 if gray else 3, 32, 32, generator=generator).expand(-1, 3, -1, -1).contiguous()
    # A smooth image plus noise gives patches whose pixels vary, so the normalisation does not divide by ~0.
    pixels = pixels + torch.linspace(-1, 1, 32)[None, None, :, None]
    noise = torch.rand(5, model.config.num_patches, generator=generator)
    mean = torch.randn(3, 32, 32, generator=generator)
    values = reconstruction_baselines(model, pixels, noise, mean, batch_size=2)
    expected = per_image_losses(pixels.numpy().astype(np.float64), noise.numpy(), mean.numpy().astype(np.float64),
                                8, model.config.mask_ratio, norm_pix_loss)  # fmt: skip
    for name in ("visible_mean", "mean_image"):
        assert values[name] == pytest.approx(expected[name], rel=1e-4), name


def test_mean_training_image_averages_the_evaluation_transformed_sample():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)) for _ in range(6)]
    split = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    transform = evaluation_transform(32)
    each = torch.stack([transform(image) for image in images])
    assert torch.allclose(evaluation_pixels(split, 32, seed=0, batch_size=4), each, atol=1e-6)
    assert torch.allclose(mean_training_image(split, 32, 100, seed=0), each.mean(dim=0), atol=1e-5)
    # A sample of 3 is the mean of 3 of the images, not of all 6.
    sample = mean_training_image(split, 32, 3, seed=1)
    assert not torch.allclose(sample, each.mean(dim=0), atol=1e-3)
    assert any(torch.allclose(sample, each[list(trio)].mean(dim=0), atol=1e-5) for trio in _trios(6))


def _trios(n: int):
    return ((a, b, c) for a in range(n) for b in range(a + 1, n) for c in range(b + 1, n))


# --------------------------------------------------------------------------------------------------------------
# Probes


def synthetic_multilabel(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 4)) < 0.3).astype(np.float64)
    informative = np.concatenate([3.0 * labels + 0.7 * rng.normal(size=(n, 4)), rng.normal(size=(n, 12))], axis=1)
    unknown = labels.copy()
    unknown[rng.random((n, 4)) < 0.1] = np.nan  # labels unknown here and there, in train and eval
    return informative, rng.normal(size=(n, 16)), unknown


@pytest.mark.parametrize("method", ["knn", "logistic"])
def test_the_probe_finds_labels_the_features_carry_and_none_in_noise(method):
    train_informative, train_noise, train_labels = synthetic_multilabel(300, seed=1)
    eval_informative, eval_noise, eval_labels = synthetic_multilabel(300, seed=2)
    names = ["a", "b", "c", "d"]
    patients = [f"p{i // 2}" for i in range(300)]  # two images per patient
    options = {"label_names": names, "method": method, "eval_patient_ids": patients, "n_bootstrap": 100}
    carried = probe_features(train_informative, train_labels, eval_informative, eval_labels, **options)
    noise = probe_features(train_noise, train_labels, eval_noise, eval_labels, **options)
    assert carried["mean_auroc"] > 0.95
    assert abs(noise["mean_auroc"] - 0.5) < 0.08
    for result in (carried, noise):
        low, high = result["mean_auroc_ci95"]
        assert low <= result["mean_auroc"] <= high and low < high
        assert set(result["per_class_auroc"]) == set(names) and (result["n_train"], result["n_eval"]) == (300, 300)


def test_the_paired_probe_difference_is_the_difference_of_the_means_with_a_paired_interval():
    train_informative, train_noise, train_labels = synthetic_multilabel(300, seed=1)
    eval_informative, eval_noise, eval_labels = synthetic_multilabel(300, seed=2)
    patients = [f"p{i // 2}" for i in range(300)]
    options = {"label_names": ["a", "b", "c", "d"], "eval_patient_ids": patients, "n_bootstrap": 100}
    carried = probe_features(train_informative, train_labels, eval_informative, eval_labels, **options)
    noise = probe_features(train_noise, train_labels, eval_noise, eval_labels, **options)
    better = probe_difference(carried, noise, eval_labels, patients, n_bootstrap=200, seed=0)
    assert better["difference"] == pytest.approx(carried["mean_auroc"] - noise["mean_auroc"])
    low, high = better["difference_ci95"]
    assert 0 < low <= better["difference"] <= high and better["p_value"] < 0.01
    # Against itself: zero in every resample.
    same = probe_difference(noise, noise, eval_labels, patients, n_bootstrap=50, seed=0)
    assert same["difference"] == 0 and same["difference_ci95"] == [0.0, 0.0]
    # Single-label class indices are scored one class against the rest, as the probe's own metrics score them.
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 3, 400)
    features = np.eye(3)[classes] * 2.0 + 0.5 * rng.normal(size=(400, 3))
    names, ids = ["x", "y", "z"], [str(i) for i in range(200)]
    one = probe_features(features[:200], classes[:200], features[200:], classes[200:], label_names=names)
    other = probe_features(rng.normal(size=(200, 3)), classes[:200], features[200:], classes[200:], label_names=names)
    single = probe_difference(one, other, classes[200:], ids, n_bootstrap=50, seed=0)
    assert single["difference"] == pytest.approx(one["mean_auroc"] - other["mean_auroc"])


def test_a_probe_difference_without_a_defined_class_is_undefined_not_an_error():
    labels = np.zeros((6, 2))  # no eval image is positive: no AUROC is defined
    train = np.random.default_rng(0).normal(size=(10, 4))
    train_labels = (np.arange(20).reshape(10, 2) % 3 == 0).astype(float)
    one = probe_features(train, train_labels, train[:6], labels, label_names=["a", "b"], k=3)
    assert one["mean_auroc"] is None
    undefined = probe_difference(one, one, labels, list("aabbcc"), n_bootstrap=10, seed=0)
    assert undefined == {"difference": None, "difference_ci95": None, "p_value": None}


def test_the_probe_of_a_single_label_corpus_is_one_multiclass_probe():
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 3, 400)
    features = np.eye(3)[classes] * 2.0 + 0.5 * rng.normal(size=(400, 3))
    result = probe_features(features[:200], classes[:200], features[200:], classes[200:], label_names=["x", "y", "z"])
    assert result["mean_auroc"] > 0.95
    noise = rng.normal(size=(400, 8))
    unrelated = probe_features(noise[:200], classes[:200], noise[200:], classes[200:], label_names=["x", "y", "z"])
    assert abs(unrelated["mean_auroc"] - 0.5) < 0.08


def test_encoder_features_pool_every_patch_unmasked_and_in_order():
    model = tiny_mae().train()
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    features = encoder_features(model, pixels, batch_size=3)
    assert model.training
    # The shuffle path with noise = arange keeps every patch in place; mean pooling must agree with it.
    in_order = torch.arange(model.config.num_patches, dtype=torch.float32).expand(4, -1)
    with torch.no_grad():
        tokens = model.vit.eval()(pixels, noise=in_order, mask_ratio=0.0).last_hidden_state
    assert np.allclose(features, tokens[:, 1:].mean(dim=1).numpy(), atol=1e-5)
    assert features.shape == (4, model.config.hidden_size)


def test_the_random_encoder_is_fixed_by_its_seed_and_leaves_the_stream_alone():
    config = tiny_vit_config(patch_size=8)
    state = torch.get_rng_state()
    first, again, other = random_encoder(config, 0), random_encoder(config, 0), random_encoder(config, 1)
    assert torch.equal(torch.get_rng_state(), state)
    weights = [dict(encoder.state_dict()) for encoder in (first, again, other)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert not torch.equal(weights[0]["layers.0.mlp.fc1.weight"], weights[2]["layers.0.mlp.fc1.weight"])


def test_probe_encoder_probes_the_encoders_pooled_features():
    model = tiny_mae()
    generator = torch.Generator().manual_seed(4)
    train, evaluation = torch.randn(30, 3, 32, 32, generator=generator), torch.randn(20, 3, 32, 32, generator=generator)
    train_labels = (torch.rand(30, 2, generator=generator) < 0.5).double().numpy()
    eval_labels = (torch.rand(20, 2, generator=generator) < 0.5).double().numpy()
    result = probe_encoder(model, train, train_labels, evaluation, eval_labels, label_names=["a", "b"], k=5)
    expected = probe_features(encoder_features(model, train), train_labels, encoder_features(model, evaluation),
                              eval_labels, label_names=["a", "b"], k=5)  # fmt: skip
    assert np.array_equal(result.pop("scores"), expected.pop("scores")) and result == expected


def test_patient_sample_keeps_whole_patients_within_the_budget():
    patients = [f"p{i}" for i in (0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 5)]
    split = datasets.Dataset.from_dict({"patient_id": patients, "index": list(range(len(patients)))})
    for seed in range(5):
        sample = patient_sample(split, 6, seed)
        chosen = set(sample["patient_id"])
        assert len(sample) <= 6 and sorted(sample["index"]) == [i for i, p in enumerate(patients) if p in chosen]
        # Filled greedily: no patient left out would still have fitted.
        assert all(patients.count(p) > 6 - len(sample) for p in set(patients) - chosen)
    assert patient_sample(split, 6, 0)["index"] == patient_sample(split, 6, 0)["index"]


# --------------------------------------------------------------------------------------------------------------
# The training-curve panels


def diagnostic_history() -> list[dict]:
    history = []
    for epoch in range(1, 5):
        step = 10 * epoch
        history.append({"step": step - 5, "epoch": epoch - 0.5, "train_loss": 1.0 / epoch, "lr": 1e-3})
        record = {"step": step, "epoch": epoch, "heldout_mae_loss": 0.5 / epoch, "heldout_visible_mean_loss": 1.1,
                  "heldout_mean_image_loss": 0.09 + 0.001 * epoch}  # fmt: skip
        if epoch % 2 == 0:
            record |= {"probe_mean_auroc": 0.6 + 0.05 * epoch, "probe_mean_auroc_ci95": [0.55, 0.9],
                       "probe_random_mean_auroc": 0.55, "probe_random_mean_auroc_ci95": None}  # fmt: skip
        history.append(record)
    return history


def test_training_curves_show_the_diagnostics(tmp_path):
    history = diagnostic_history()
    fig = _training_figure(history, "run")
    axes = {ax.get_ylabel(): ax for ax in fig.axes}
    assert list(axes) == ["loss", "learning rate", "held-out masked-patch loss", "probe mean AUROC"]
    reconstruction, probe = axes["held-out masked-patch loss"], axes["probe mean AUROC"]
    assert reconstruction.get_yscale() == "log"
    for ax, keys in ((reconstruction, RECONSTRUCTION_KEYS), (probe, ("probe_mean_auroc", "probe_random_mean_auroc"))):
        curves = [line for line in ax.get_lines() if line.get_marker() == "o"]
        assert len(curves) == len(keys)
        for line, key in zip(curves, keys, strict=True):
            assert np.allclose(line.get_ydata(), [record[key] for record in history if key in record]), key
    # Error bars where a CI exists (the MAE encoder's two probes), none for the random encoder without one.
    bars = [collection for collection in probe.collections if len(collection.get_segments())]
    assert len(bars) == 1 and len(bars[0].get_segments()) == 2
    assert "chance" in [text.get_text() for text in probe.get_legend().get_texts()]
    path = plot_training_curves(history, tmp_path / "curves.png", title="run")
    assert_readable_png(path)


# --------------------------------------------------------------------------------------------------------------
# A real pre-training run


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    corpus = generate_phantoms(tmp_path_factory.mktemp("phantoms"), 240, size=48, seed=1, difficulty="easy")
    return corpus.output_dir


def test_scorable_labels_are_those_with_both_values_among_the_known_ones():
    nan = np.nan
    labels = np.array([[1, 0, nan, 1], [0, 0, 1, 1], [nan, 0, 1, 1]])
    assert scorable_labels(labels, ["a", "b", "c", "d"]) == ["a"]
    assert scorable_labels(np.array([0, 2, 2]), ["x", "y", "z"]) == ["x", "z"]  # class indices, one against the rest
    assert scorable_labels(np.array([1, 1]), ["x", "y"]) == []


def pretrain_command(phantoms: Path, output_dir: Path, *flags: str) -> list[str]:
    return [
        str(BIN / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "recipes/pretrain.py", "--data_dir", str(phantoms), "--output_dir", str(output_dir),
        "--model", "vit-tiny", "--model_overrides", "{patch_size: 8, num_hidden_layers: 2}", "--image_size", "32",
        "--per_device_train_batch_size", "16", "--num_train_epochs", "3", "--logging_steps", "2", "--seed", "3",
        "--reconstruction_every_epochs", "3", "--learning_rate", "1e-3",
        "--dataset_options", "{validation_fraction: 0.3}", *flags,
    ]  # fmt: skip


def pretrain(phantoms: Path, output_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = pretrain_command(phantoms, output_dir, *flags)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


PROBE = ("--probe_dataset", "nih-chestxray14", "--probe_dataset_options", "{validation_fraction: 0.3}",
         "--probe_train_images", "120", "--diagnostic_images", "40", "--snapshot_every_epochs", "2")  # fmt: skip


def diagnostics(output_dir: Path) -> list[dict]:
    history = json.loads((output_dir / "trainer_history.json").read_text())
    return [record for record in history if "heldout_mae_loss" in record or "probe_mean_auroc" in record]


@pytest.mark.slow
def test_pretraining_records_the_diagnostics_and_resumes_without_duplicates(phantoms, tmp_path):
    straight = tmp_path / "straight"
    result = pretrain(phantoms, straight, *PROBE, "--checkpointing_steps", "1")
    assert "diagnostics: held-out masked-patch loss at every epoch end on" in result.stdout
    assert "nih-chestxray14's validation split (not training images" in result.stdout
    assert re.search(r"mean AUROC over the (\d+) of 14 labels with both values there", result.stdout)
    records = diagnostics(straight)
    # One record per epoch end; the probe at the snapshot (epoch 2) and at the end.
    assert [record["epoch"] for record in records] == [1, 2, 3]
    assert [("probe_mean_auroc" in record) for record in records] == [False, True, True]
    for record in records:
        assert all(np.isfinite(record[key]) and record[key] > 0 for key in RECONSTRUCTION_KEYS)
    for record in records[1:]:
        assert 0.0 <= record["probe_mean_auroc"] <= 1.0 and 0.0 <= record["probe_random_mean_auroc"] <= 1.0
        low, high = record["probe_mean_auroc_ci95"]
        assert low <= record["probe_mean_auroc"] <= high
        assert record["n_probe_train_images"] <= 120
        difference = record["probe_minus_random"]
        assert difference == pytest.approx(record["probe_mean_auroc"] - record["probe_random_mean_auroc"])
        low, high = record["probe_minus_random_ci95"]
        assert low <= difference <= high
    # The random encoder is probed once: the same value at every probe.
    assert records[1]["probe_random_mean_auroc"] == records[2]["probe_random_mean_auroc"]
    assert_readable_png(straight / "figures" / "training_curves.png")

    # Resumed from the checkpoint at the last step of epoch 1, written before that epoch end's record: the resumed
    # run records epoch 1 once, and every record as the straight run did.
    steps_per_epoch = records[0]["step"]
    checkpoint = straight / "checkpoints" / f"step-{steps_per_epoch:08d}"
    resumed = tmp_path / "resumed"
    pretrain(phantoms, resumed, *PROBE, "--resume_from_checkpoint", str(checkpoint))
    again = diagnostics(resumed)
    assert [record["epoch"] for record in again] == [1, 2, 3]
    for one, other in zip(records, again, strict=True):
        assert one.keys() == other.keys()
        for key, value in one.items():
            assert value == (other[key] if isinstance(value, str) else pytest.approx(other[key], rel=1e-5)), key

    # The measurements draw nothing from the training's random streams: without them, the same weights.
    bare = tmp_path / "bare"
    pretrain(phantoms, bare, "--diagnostic_images", "0", "--checkpointing_steps", "1")
    assert not diagnostics(bare)
    weights, bare_weights = load_file(straight / "model.safetensors"), load_file(bare / "model.safetensors")
    assert all(torch.equal(weights[key], bare_weights[key]) for key in weights)


def test_probe_readouts_include_the_recipes_probe_features():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from probe_readouts import readouts
    finally:
        sys.path.pop(0)
    model = tiny_mae()
    pixels = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    features = readouts(model.vit.eval(), pixels, batch_size=2)
    blocks = [f"block {i} patch mean" for i in range(1, model.config.num_hidden_layers + 1)]
    assert list(features) == [*blocks, "final patch mean (the recipe's)", "final CLS token"]
    assert np.allclose(features["final patch mean (the recipe's)"], encoder_features(model, pixels), atol=1e-6)
    # The last block's tokens, before the final LayerNorm, are not the recipe's readout.
    assert not np.allclose(features[blocks[-1]], features["final patch mean (the recipe's)"], atol=1e-3)
    assert all(value.shape == (5, model.config.hidden_size) for value in features.values())


@pytest.mark.slow
def test_the_probe_readouts_script_writes_its_table_from_its_json(phantoms, tmp_path):
    mae = tmp_path / "mae"
    CXRViTMAEForPreTraining(tiny_vit_config(patch_size=8, num_hidden_layers=2, image_size=32)).save_pretrained(mae)
    output = tmp_path / "readouts.json"
    command = [sys.executable, "scripts/probe_readouts.py", str(mae), "--data-dir", str(phantoms),
               "--train-images", "60", "--eval-images", "40", "--output", str(output)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert 0 < result["n_train"] <= 60 and 0 < result["n_eval"] <= 40
    assert [(row["readout"], row["method"]) for row in result["rows"]][::2] == [
        ("block 1 patch mean", "knn"), ("block 2 patch mean", "knn"), ("final patch mean (the recipe's)", "knn"),
        ("final CLS token", "knn"),
    ]  # fmt: skip
    for row in result["rows"]:
        for encoder in ("mae", "random"):
            low, high = row[encoder]["mean_auroc_ci95"]
            assert low <= row[encoder]["mean_auroc"] <= high
        paired = row["mae_minus_random"]
        assert paired["difference"] == pytest.approx(row["mae"]["mean_auroc"] - row["random"]["mean_auroc"])
        low, high = paired["difference_ci95"]
        assert low <= paired["difference"] <= high
        assert f"| {row['readout']} | {row['method']} | {row['mae']['mean_auroc']:.3f} [" in done.stdout
        assert f"| {paired['difference']:+.3f} [{low:+.3f}, {high:+.3f}] |" in done.stdout
    assert set(result["pixels"]) == {"knn", "logistic"} and "scripts/probe_readouts.py" in result["command"]

    # A corpus directory that is not one: one line naming it, no traceback.
    wrong = subprocess.run([*command[:4], str(tmp_path / "missing")], cwd=ROOT, capture_output=True, text=True)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert f"--data-dir {tmp_path / 'missing'}: " in wrong.stderr and "no such directory" in wrong.stderr


@pytest.mark.slow
def test_a_probe_with_no_scorable_label_is_refused_before_training(phantoms, tmp_path):
    # One validation image cannot hold both a positive and a negative of any label. The recipe runs as one plain
    # process here: `accelerate launch` would add its own traceback of the failed child.
    command = pretrain_command(phantoms, tmp_path / "run", *PROBE, "--probe_eval_images", "1")
    command = [sys.executable, *command[command.index("recipes/pretrain.py") :]]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert "no label has both a positive and a negative image among the probe's 1 validation images" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "model.safetensors").exists()
    assert "train:" not in result.stderr  # no training step started
