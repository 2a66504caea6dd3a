"""Figures written by the recipes: each is a readable PNG, and the reconstruction panel shows what it is given."""

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_vitmae.evaluation.figures import (
    PANEL_PIXELS,
    Panel,
    _roc_figure,
    _training_figure,
    plot_panels,
    plot_reconstructions,
    plot_roc_curves,
    plot_training_curves,
)
from cxr_vitmae.evaluation.metrics import classification_metrics, roc_curves

NAMES = ["Atelectasis", "Cardiomegaly", "Effusion", "Hernia"]
MEAN, STD = 0.5056, 0.252


def _read(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("L"), dtype=np.float64)


def _scores_and_labels(hernia_positive: bool):
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < 0.3).astype(np.float64)
    labels[:5, 0] = np.nan
    if not hernia_positive:
        labels[:, 3] = 0.0  # one label value: no curve, AUROC None
    scores = np.clip(0.5 * labels + 0.6 * rng.random((200, 4)), 0, 1)
    scores = np.nan_to_num(scores, nan=0.5)
    return scores, labels


@pytest.mark.parametrize("hernia_positive", [True, False], ids=["all-classes", "missing-class"])
def test_roc_curves_png(tmp_path, hernia_positive):
    scores, labels = _scores_and_labels(hernia_positive)
    curves = roc_curves(scores, labels, NAMES)
    metrics = classification_metrics(scores, labels, label_names=NAMES, patient_ids=None, n_bootstrap=0)
    aurocs = {name: m["auroc"] for name, m in metrics["per_class"].items()}
    assert ("Hernia" in curves) is hernia_positive

    path = plot_roc_curves(curves, aurocs, tmp_path / "new" / "dir" / "roc.png", title="test")
    assert path == tmp_path / "new" / "dir" / "roc.png"
    pixels = _read(path)
    assert 600 < pixels.shape[0] < 2000 and 600 < pixels.shape[1] < 2000
    assert pixels.std() > 10  # not a blank canvas

    fig = _roc_figure(curves, aurocs, None)
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend[0] == f"Atelectasis (AUROC {aurocs['Atelectasis']:.3f})"
    assert len(legend) == 4
    assert legend[3].startswith("Hernia") and ("no curve" in legend[3]) is not hernia_positive


def _history(with_validation: bool) -> list[dict]:
    history = []
    for step in range(0, 301, 10):
        history.append({"step": step, "epoch": step / 100, "train_loss": 1.0 / (1 + step / 50), "lr": 1e-4})
        if with_validation and step and step % 100 == 0:
            history.append({"step": step, "epoch": step // 100, "val_mean_auroc": 0.6 + step / 1000})
    if with_validation:
        history[-1]["selected"] = True
    return history


@pytest.mark.parametrize("with_validation", [True, False], ids=["validation", "no-validation"])
def test_training_curves_png(tmp_path, with_validation):
    path = plot_training_curves(_history(with_validation), tmp_path / "curves" / "training.png", title="run")
    pixels = _read(path)
    assert pixels.std() > 10
    panels = 3 if with_validation else 2
    assert pixels.shape[0] >= panels * PANEL_PIXELS and pixels.shape[1] >= 2 * PANEL_PIXELS

    # One axis per quantity, each curve as it varies in the history: no constant or foreign series on an axis.
    fig = _training_figure(_history(with_validation), None)
    axes = {ax.get_ylabel(): ax for ax in fig.axes}
    assert list(axes) == ["loss", "learning rate"] + (["mean auroc"] if with_validation else [])
    for label, key in (("loss", "train_loss"), ("learning rate", "lr"), ("mean auroc", "val_mean_auroc")):
        if label not in axes:
            continue
        lines = [line for line in axes[label].get_lines() if line.get_label() == key]
        expected = [record[key] for record in _history(with_validation) if key in record]
        assert len(lines) == 1 and np.allclose(lines[0].get_ydata(), expected)
        if key != "lr":  # the history's learning rate is constant, its loss and AUROC are not
            assert np.ptp(lines[0].get_ydata()) > 0
    if with_validation:
        labels = [text.get_text() for text in axes["mean auroc"].get_legend().get_texts()]
        assert labels == ["val_mean_auroc", "selected (step 300): 0.9"]


def test_a_count_in_the_history_is_not_plotted_as_a_metric():
    # A fine-tuning history records how many images each validation saw; it is no metric and has no axis.
    history = [*_history(True), {"step": 300, "n_validation_images": 252}]
    assert "n validation images" not in [ax.get_ylabel() for ax in _training_figure(history, None).axes]


def test_training_curves_tolerate_sparse_records(tmp_path):
    for history in ([], [{}], [{"epoch": 1, "val_loss": 0.4}], [{"train_loss": None, "lr": 1e-3}]):
        assert _read(plot_training_curves(history, tmp_path / "sparse.png")).std() > 0


def test_reconstructions_png_with_error_map(tmp_path):
    original = torch.randn(2, 3, 32, 32)
    masked = original.clone()
    masked[:, :, :16] = 0.0
    reconstruction = original + 0.1 * torch.randn_like(original)
    error = torch.rand(2, 1, 32, 32)
    path = plot_reconstructions(
        original, masked, reconstruction, tmp_path / "rec" / "r.png", error=error, titles=["a", "b"]
    )
    pixels = _read(path)
    assert 500 < pixels.shape[0] < 1500 and 1000 < pixels.shape[1] < 2500  # 2 rows, 4 columns + colorbar
    with pytest.raises(ValueError, match="titles"):
        plot_reconstructions(original, masked, reconstruction, tmp_path / "x.png", titles=["only one"])


def test_reconstruction_panel_shows_the_reconstruction_denormalised(tmp_path):
    """Dark vs light reconstruction, all else equal: only the third column changes, to the un-normalised grays."""
    original = torch.full((2, 3, 32, 32), (1.0 - MEAN) / STD)  # white
    error = np.full((2, 32, 32), 0.5)
    figures = {}
    for intensity in (0.25, 0.75):
        reconstruction = torch.full((2, 3, 32, 32), (intensity - MEAN) / STD)
        path = plot_reconstructions(original, original, reconstruction, tmp_path / f"{intensity}.png", error=error)
        figures[intensity] = _read(path)
    dark, light = figures[0.25], figures[0.75]
    assert dark.shape == light.shape

    changed = np.abs(dark - light) > 100
    assert changed.sum() > 0.05 * changed.size
    cols = np.nonzero(changed)[1]
    # The changed block is the reconstruction column: third of four image columns (a colorbar follows them).
    assert 0.45 * dark.shape[1] < cols.mean() < 0.75 * dark.shape[1]
    # Shown as gray levels 0.25 and 0.75, i.e. the normalisation was undone (raw values would clip to 0 / 247).
    assert dark[changed].mean() == pytest.approx(0.25 * 255, abs=4)
    assert light[changed].mean() == pytest.approx(0.75 * 255, abs=4)


def test_panels_are_readable_and_show_the_maps(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((32, 32))
    heatmap = np.zeros((32, 32))
    heatmap[4:12, 20:28] = 1.0  # a hot block in the top right
    anomaly = heatmap.copy()
    anomaly[0, :] = np.nan  # never hidden: drawn black, not an error
    panels = [Panel("input", image), Panel("Grad-CAM", image, heatmap, "jet", "Grad-CAM", (0.0, 1.0)),
              Panel("anomaly", heatmap=anomaly, heat_label="|error|")]  # fmt: skip
    path = plot_panels(panels, tmp_path / "panels.png", title="model: Mass, p = 0.9")
    with Image.open(path) as figure:
        pixels = np.asarray(figure.convert("RGB")).astype(int)
    assert figure.width >= 3 * 384 and figure.height >= 384
    # The second panel's hot block is drawn in jet's red over the image: a block of clearly red pixels.
    middle = pixels[:, figure.width // 3 : 2 * figure.width // 3]
    assert (middle[..., 0] - middle[..., 2] > 60).sum() > 5000
    with pytest.raises(ValueError, match="neither an image nor a heatmap"):
        plot_panels([Panel("empty")], tmp_path / "empty.png", title="x")
    with pytest.raises(ValueError, match="no panels"):
        plot_panels([], tmp_path / "none.png", title="x")
