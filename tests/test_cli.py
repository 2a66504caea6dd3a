"""The `cxr-vitmae` console script, run as a user runs it: a real process on real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import randomize_
from PIL import Image

from cxr_vitmae import CXRImageProcessor, CXRViTMAEConfig, CXRViTMAEForPreTraining, ViTMAEForChestXray

CONSOLE_SCRIPT = Path(sys.executable).parent / "cxr-vitmae"


def cxr_vitmae(*args: str) -> subprocess.CompletedProcess:
    assert CONSOLE_SCRIPT.exists(), "the package must be installed (make test does this) for its console script"
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model")
    config = CXRViTMAEConfig.from_preset("vit-tiny", image_size=64, num_hidden_layers=2)
    randomize_(ViTMAEForChestXray(config)).save_pretrained(path)
    return path


@pytest.mark.slow
def test_predict_prints_probabilities_per_image(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    png8 = tmp_path / "a.png"
    png16 = tmp_path / "b 16bit.png"
    Image.fromarray(rng.integers(0, 256, (90, 80), dtype=np.uint8)).save(png8)
    Image.fromarray(rng.integers(0, 65536, (100, 100), dtype=np.uint16)).save(png16)

    result = cxr_vitmae("predict", str(model_dir), str(png8), str(png16), "--batch-size", "1")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert list(predictions) == [str(png8), str(png16)]

    model = ViTMAEForChestXray.from_pretrained(model_dir).eval()
    processor = CXRImageProcessor.from_pretrained(model_dir)
    for path, scores in predictions.items():
        with torch.no_grad():
            probabilities = torch.sigmoid(model(**processor(path, return_tensors="pt")).logits[0])
        assert list(scores) == [model.config.id2label[i] for i in range(14)]
        for index, label in model.config.id2label.items():
            assert scores[label] == pytest.approx(probabilities[index].item(), abs=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_predict_bad_image_gives_one_line_naming_it(model_dir, tmp_path, problem):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(good)
    bad = tmp_path / "patient_0042.png"
    if problem == "corrupt":
        bad.write_bytes(good.read_bytes()[:40])
    result = cxr_vitmae("predict", str(model_dir), str(good), str(bad))
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "patient_0042.png" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_predict_missing_model_dir(tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(image)
    result = cxr_vitmae("predict", str(tmp_path / "no_such_model"), str(image))
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "no_such_model" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback_of_an_error_that_is_otherwise_one_line(tmp_path, how):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(image)
    args = ["predict", str(tmp_path / "no_such_model"), str(image)]
    plain = cxr_vitmae(*args)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    if how == "flag":
        debug = cxr_vitmae(*args, "--debug")
    else:
        debug = subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=300,
                               env={**os.environ, "CXR_VITMAE_DEBUG": "1"})  # fmt: skip
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "no_such_model" in debug.stderr


@pytest.mark.slow
def test_predict_refuses_a_pretraining_directory(tmp_path):
    # It would load into the classifier class with a random head and print meaningless probabilities.
    pretraining = tmp_path / "mae"
    CXRViTMAEForPreTraining(
        CXRViTMAEConfig.from_preset("vit-tiny", image_size=32, num_hidden_layers=1)
    ).save_pretrained(pretraining)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(image)
    result = cxr_vitmae("predict", str(pretraining), str(image))
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CXRViTMAEForPreTraining model, not an image classifier" in lines[0], result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["--help"], *([command, "--help"] for command in ("predict", "gradcam", "reconstruct", "push", "localize"))],
)
def test_help(args):
    result = cxr_vitmae(*args)
    assert result.returncode == 0 and "usage: cxr-vitmae" in result.stdout


def test_an_unexpected_error_keeps_its_traceback_while_a_user_error_is_one_line(model_dir, tmp_path, monkeypatch,
                                                                               capsys):  # fmt: skip
    # A ValueError from inside the package is a bug, not bad input: the one-line catch must not swallow it.
    import cxr_vitmae.batch_predict
    from cxr_vitmae.cli import main
    from cxr_vitmae.errors import InputError

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(image)

    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(cxr_vitmae.batch_predict, "score_pixels", broken)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(["predict", str(model_dir), str(image)])

    def refused(*args, **kwargs):
        raise InputError("x.png: not what predict needs")

    monkeypatch.setattr(cxr_vitmae.batch_predict, "score_pixels", refused)
    assert main(["predict", str(model_dir), str(image)]) == 1
    assert capsys.readouterr().err == "cxr-vitmae predict: error: x.png: not what predict needs\n"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["gradcam", "reconstruct"])
def test_an_output_path_in_a_missing_directory_is_refused_before_any_work(command, tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(image)
    # The model directory does not exist either: only the output check can be what answers.
    result = cxr_vitmae(command, str(tmp_path / "no_such_model"), str(image), "--output", str(tmp_path / "nodir/x.png"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nodir" in lines[0] and "does not exist" in lines[0], result.stderr
    assert not (tmp_path / "nodir").exists()
