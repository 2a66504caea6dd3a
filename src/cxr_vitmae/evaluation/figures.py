"""PNG figures written by the recipes and the CLI: ROC curves, training curves, MAE reconstructions, and rows of
image panels (Grad-CAM, reconstruction strips).

Figures are built on `matplotlib.figure.Figure` with an explicit Agg canvas, never through `pyplot`, so nothing
touches matplotlib's global backend or figure registry: the functions are safe in worker processes, under
`accelerate launch`, and on machines without a display. Each function creates the parent directory of `path`,
writes a PNG at 150 dpi, releases the figure and returns the path.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

__all__ = ["Panel", "panels_image", "plot_panels", "plot_reconstructions", "plot_roc_curves", "plot_training_curves"]

DPI = 150
# Every panel at least this many pixels a side: images at a model's 64-224 px input are upsampled for people.
PANEL_PIXELS = 384
# Normalisation of CXRViTMAEImageProcessor (same value on every channel).
IMAGE_MEAN = 0.5056
IMAGE_STD = 0.252

_STAR = {"marker": "*", "markersize": 13, "color": "gold", "markeredgecolor": "black", "zorder": 5}
_PROBE_AXIS = "probe mean AUROC"
# The pre-training recipe's diagnostics (training/pretraining_monitor.py): per axis, its y label, whether it is
# logarithmic, and its (history key, legend) curves. The visible-pixel mean's loss is fifteen times the MAE's on the
# reproduction study's MAE (1.11 against 0.0738), the mean image's close to it (0.0880): hence the log scale.
_DIAGNOSTIC_AXES = (
    (
        "held-out masked-patch loss",
        True,
        (
            ("heldout_mae_loss", "MAE"),
            ("heldout_visible_mean_loss", "each image's visible-pixel mean"),
            ("heldout_mean_image_loss", "training mean image"),
        ),
    ),
    (_PROBE_AXIS, False, (("probe_mean_auroc", "MAE encoder"), ("probe_random_mean_auroc", "random encoder"))),
)
_RECONSTRUCTION_COLUMNS = ("original", "masked", "reconstruction", "|error|")


# --------------------------------------------------------------------------------------------------------------
# ROC curves


def plot_roc_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    aurocs: Mapping[str, float | None],
    path: str | PathLike,
    title: str | None = None,
) -> Path:
    """One panel with one ROC curve per class, the chance diagonal, and a legend below the axes.

    Args:
        curves: `{name: (fpr, tpr)}` as returned by `cxr_vitmae.evaluation.roc_curves`. Classes with a single
            label value are absent from it; if they are keys of `aurocs` they are listed in the legend as
            having no curve.
        aurocs: `{name: auroc or None}`, e.g. `{n: m["auroc"] for n, m in metrics["per_class"].items()}`. Its
            key order (the label order) is the legend order; classes only in `curves` follow.
        path: where to write the PNG.
        title: figure title; the mean AUROC over the classes with a value is shown under it.
    """
    return _save(_roc_figure(curves, aurocs, title), path)


def _roc_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], aurocs: Mapping[str, float | None], title: str | None
) -> Figure:
    names = list(aurocs) + [name for name in curves if name not in aurocs]
    n_columns = 2 if len(names) > 4 else 1
    legend_rows = math.ceil(max(len(names), 1) / n_columns)
    fig = _new_figure(6.4, 5.6 + 0.24 * legend_rows)
    ax = fig.add_subplot()
    colors = _class_colors(len(names))

    handles = []
    for name, color in zip(names, colors, strict=True):
        auroc = aurocs.get(name)
        if name in curves:
            fpr, tpr = (np.asarray(a, dtype=np.float64) for a in curves[name])
            label = f"{name} (AUROC {auroc:.3f})" if _finite(auroc) else f"{name} (AUROC n/a)"
            (line,) = ax.plot(fpr, tpr, color=color, linewidth=1.4, label=label)
            handles.append(line)
        else:
            # No curve: a single label value among the known labels. Listed so the reader sees it is missing.
            handles.append(Line2D([], [], linestyle="none", label=f"{name} (no curve: one label value)"))

    ax.plot([0, 1], [0, 1], color="0.55", linestyle="--", linewidth=1.0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.005)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 − specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.grid(True, alpha=0.3)

    defined = [float(value) for value in aurocs.values() if _finite(value)]
    subtitle = (
        f"mean AUROC {np.mean(defined):.3f} over {len(defined)} of {len(names)} classes" if defined else "no AUROC"
    )
    ax.set_title(subtitle, fontsize=10)
    if title:
        _suptitle(fig, title)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=n_columns, fontsize=8, frameon=False)
    return fig


def _class_colors(n: int) -> list:
    cmap = colormaps["tab20" if n > 10 else "tab10"]
    if n > 10:
        # tab20 pairs a dark and a light shade; take the dark ones first so neighbours in the legend differ most.
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return [cmap(order[i % 20]) for i in range(n)]
    return [cmap(i) for i in range(n)]


# --------------------------------------------------------------------------------------------------------------
# Training curves


def plot_training_curves(history: Sequence[Mapping], path: str | PathLike, title: str | None = None) -> Path:
    """Training curves against the optimisation step, one axis per quantity: the losses, the learning rate, each
    validation metric on a panel of its own and, from pre-training, the held-out reconstruction losses and the probe.

    Args:
        history: records such as `{"step": 120, "epoch": 1.5, "train_loss": 0.31, "lr": 1e-4}` and, at
            evaluation points, `{"step": 200, "epoch": 2, "val_mean_auroc": 0.81}`. Every numeric `val_*` key is a
            validation metric (`val_loss` joins the training loss on the loss axis). The last record with
            `"selected": True` is the selected checkpoint; it is starred on the validation curves and marked with a
            vertical line. Pre-training's `heldout_*_loss` keys share one axis (log scale), `probe_mean_auroc` and
            `probe_random_mean_auroc` another, with error bars from their `*_ci95` pairs and the chance level.
            Missing keys, `None` and an empty history are tolerated. The x axis is `step`; if no record has one,
            `epoch`; if none has either, the record's position.
        path: where to write the PNG.
        title: figure title.
    """
    return _save(_training_figure(history, title), path)


def _training_figure(history: Sequence[Mapping], title: str | None) -> Figure:
    records = [record for record in history if isinstance(record, Mapping)]
    if any(_finite(record.get("step")) for record in records):
        x_key, x_label = "step", "step"
    elif any(_finite(record.get("epoch")) for record in records):
        x_key, x_label = "epoch", "epoch"
    else:
        x_key, x_label = None, "record"

    def points(key: str) -> list[tuple[float, float, Mapping]]:
        """(x, value, record) of every record with a number under `key`, in x order."""
        found = []
        for index, record in enumerate(records):
            x = index if x_key is None else record.get(x_key)
            if _finite(x) and _is_number(record.get(key)):
                found.append((float(x), float(record[key]), record))
        return sorted(found, key=lambda point: point[0])

    def series(key: str) -> tuple[np.ndarray, np.ndarray]:
        found = points(key)
        return np.asarray([x for x, _, _ in found]), np.asarray([y for _, y, _ in found])

    val_keys = []
    for record in records:
        for key, value in record.items():
            if isinstance(key, str) and key.startswith("val_") and key not in val_keys and _is_number(value):
                val_keys.append(key)
    loss_keys = [key for key in ("train_loss", "val_loss") if key == "train_loss" or key in val_keys]
    metric_keys = [key for key in val_keys if key != "val_loss"]
    has_lr = series("lr")[0].size > 0

    selected = None
    for index, record in enumerate(records):
        if record.get("selected") is True:
            x = index if x_key is None else record.get(x_key)
            if _finite(x):
                selected = (float(x), record)

    # (y label, log scale, (key, legend) curves) per axis: panels at least PANEL_PIXELS tall.
    quantities = [("loss", False, [(key, key) for key in loss_keys])]
    quantities += [("learning rate", False, [("lr", "lr")])] if has_lr else []
    quantities += [(key.removeprefix("val_").replace("_", " "), False, [(key, key)]) for key in metric_keys]
    quantities += [axis for axis in _DIAGNOSTIC_AXES if any(series(key)[0].size for key, _ in axis[2])]
    panel_inches = 1.15 * PANEL_PIXELS / DPI
    fig = _new_figure(7.5, panel_inches * len(quantities) + 0.5)
    axes = fig.subplots(len(quantities), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, logarithmic, curves) in zip(axes, quantities, strict=True):
        plotted = False
        for key, legend in curves:
            found = points(key)
            if not found:
                continue
            xs, ys = series(key)
            validation = key.startswith("val_")
            # Evaluation points (validation, diagnostics) are marked; the logged training curves are not.
            marker = "" if key in ("train_loss", "lr") else "o"
            (line,) = ax.plot(xs, ys, marker=marker, markersize=3, linewidth=1.2, label=legend)
            _error_bars(ax, found, f"{key}_ci95", line.get_color())
            plotted = True
            if selected is not None and validation and _is_number(selected[1].get(key)):
                value = float(selected[1][key])
                star = f"selected ({x_label} {selected[0]:g}): {value:.4g}"
                ax.plot(selected[0], value, linestyle="none", label=star, **_STAR)
        if label == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if label == _PROBE_AXIS:
            ax.axhline(0.5, color="0.55", linestyle=":", linewidth=1.0, label="chance")
        if logarithmic and plotted:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if plotted:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no training records", ha="center", va="center", transform=ax.transAxes)
        if selected is not None:
            ax.axvline(selected[0], color="goldenrod", linestyle="--", linewidth=1.0)
    axes[-1].set_xlabel(x_label)
    _suptitle(fig, title or "training curves")
    return fig


def _error_bars(ax, points: list[tuple[float, float, Mapping]], interval_key: str, color) -> None:
    """Error bars at the (x, value, record) `points` whose record holds a [low, high] pair under `interval_key`."""
    bars = [(x, y, record[interval_key]) for x, y, record in points if _interval(record.get(interval_key))]
    if not bars:
        return
    x, y, bounds = (np.asarray(values, dtype=np.float64) for values in zip(*bars, strict=True))
    spread = np.abs(np.stack([y - bounds[:, 0], bounds[:, 1] - y]))
    ax.errorbar(x, y, yerr=spread, fmt="none", ecolor=color, elinewidth=1.0, capsize=3)


# --------------------------------------------------------------------------------------------------------------
# Reconstructions


def plot_reconstructions(
    original,
    masked,
    reconstruction,
    path: str | PathLike,
    *,
    mean: float | Sequence[float] = IMAGE_MEAN,
    std: float | Sequence[float] = IMAGE_STD,
    error=None,
    titles: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """A grid with one row per image and columns original / masked / reconstruction / |error| map.

    Args:
        original, masked, reconstruction: (N, C, H, W) tensors or arrays in normalised units (also accepted:
            (C, H, W) or (H, W) for one image). Channel 0 is shown in grayscale after undoing the normalisation
            (`pixel * std + mean`, clipped to [0, 1]). NaN pixels of `masked` (a way to mark removed patches)
            are drawn in a flat dark blue.
        path: where to write the PNG.
        mean, std: the normalisation to undo; a per-channel sequence uses its first value.
        error: optional (N, H, W) or (N, C, H, W) map shown as given (channel 0). Default: the absolute
            difference of reconstruction and original in display intensity, `|reconstruction − original| * std`.
            Shown with the `magma` colormap on a scale shared by all rows, from 0, with a colorbar.
        titles: optional per-row labels (N strings), shown left of each row.
        title: optional figure title.
    """
    fig = _reconstruction_figure(
        original, masked, reconstruction, mean=mean, std=std, error=error, titles=titles, title=title
    )
    return _save(fig, path)


def _reconstruction_figure(original, masked, reconstruction, *, mean, std, error, titles, title) -> Figure:
    mean = float(np.ravel(mean)[0])
    std = float(np.ravel(std)[0])
    original = _images(original, "original")
    masked = _images(masked, "masked")
    reconstruction = _images(reconstruction, "reconstruction")
    if not original.shape == masked.shape == reconstruction.shape:
        raise ValueError(
            f"original, masked and reconstruction must have equal shapes, got {original.shape}, {masked.shape}, "
            f"{reconstruction.shape}"
        )
    if error is None:
        error = np.abs(reconstruction - original) * std
    else:
        error = _images(error, "error")
        if error.shape != original.shape:
            raise ValueError(f"error has shape {error.shape}, expected {original.shape} after taking channel 0")
    n = original.shape[0]
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")

    def display(a: np.ndarray) -> np.ndarray:
        return np.clip(a * std + mean, 0.0, 1.0)

    finite_error = error[np.isfinite(error)]
    vmax = float(finite_error.max()) if finite_error.size else 1.0
    vmax = vmax if vmax > 0 else 1.0

    gray = colormaps["gray"].with_extremes(bad="#1f3a93")
    magma = colormaps["magma"]

    height, width = original.shape[1:]
    cell = 1.1 * PANEL_PIXELS / DPI  # inches: at least PANEL_PIXELS per panel after the titles
    fig = _new_figure(4 * cell * max(width / height, 0.25) + 1.0, n * cell + (0.7 if title else 0.4))
    axes = fig.subplots(n, 4, squeeze=False)
    error_image = None
    for row in range(n):
        panels = (display(original[row]), display(masked[row]), display(reconstruction[row]))
        for col, image in enumerate(panels):
            axes[row, col].imshow(image, cmap=gray, vmin=0.0, vmax=1.0, interpolation="nearest")
        error_image = axes[row, 3].imshow(error[row], cmap=magma, vmin=0.0, vmax=vmax, interpolation="nearest")
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
        if titles is not None:
            axes[row, 0].set_ylabel(str(titles[row]), fontsize=9)
    for col, name in enumerate(_RECONSTRUCTION_COLUMNS):
        axes[0, col].set_title(name, fontsize=10)
    fig.colorbar(error_image, ax=axes[:, 3], shrink=0.9 if n > 1 else 0.8, label="|error|")
    if title:
        _suptitle(fig, title)
    return fig


def _images(a, name: str) -> np.ndarray:
    """Channel 0 of a tensor or array as an (N, H, W) float64 array.

    Images: (N, C, H, W), or (C, H, W) / (H, W) for one image. Error maps: (N, C, H, W) or (N, H, W), or (H, W).
    """
    if hasattr(a, "detach"):  # torch.Tensor, without importing torch here
        a = a.detach().float().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 4:
        a = a[:, 0]
    elif a.ndim == 3 and name != "error":
        a = a[:1]
    elif a.ndim == 2:
        a = a[None]
    elif a.ndim != 3:
        raise ValueError(f"{name} must be (N, C, H, W), (C, H, W) or (H, W), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} holds no images")
    return a


# --------------------------------------------------------------------------------------------------------------
# Panels of one image: Grad-CAM, reconstruction strips


@dataclass(frozen=True)
class Panel:
    """One panel of `plot_panels`: a grayscale `image` ((H, W), display intensities in [0, 1]) and/or a `heatmap`
    ((H, W), NaN drawn transparent/black) in `cmap` with a colour bar labelled `heat_label`. With both, the heatmap
    is drawn half-transparent over the image; `heat_range` fixes the colour scale (default: 0 to the maximum)."""

    title: str
    image: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    cmap: str = "magma"
    heat_label: str = ""
    heat_range: tuple[float, float] | None = None


def plot_panels(panels: Sequence[Panel], path: str | PathLike, *, title: str) -> Path:
    """One row of panels, each at least `PANEL_PIXELS` a side (bicubic upsampling for images, bilinear for maps),
    titled, with a colour bar beside every heatmap, under a figure `title` (the model, label and score)."""
    return _save(_panels_figure(panels, title), path)


def panels_image(panels: Sequence[Panel], *, title: str) -> Image.Image:
    """`plot_panels`' figure as an RGB `PIL.Image` in memory (for the demo app), pixel for pixel the PNG that
    `plot_panels` writes."""
    buffer = io.BytesIO()
    _write_png(_panels_figure(panels, title), buffer)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return image.convert("RGB")


def _panels_figure(panels: Sequence[Panel], title: str) -> Figure:
    if not panels:
        raise ValueError("no panels to draw")
    side = 1.25 * PANEL_PIXELS / DPI  # inches: the axes keep at least PANEL_PIXELS after titles and colour bars
    fig = _new_figure(side * len(panels) * 1.2, side + 0.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        if panel.image is None and panel.heatmap is None:
            raise ValueError(f"panel {panel.title!r} has neither an image nor a heatmap")
        if panel.image is not None:
            ax.imshow(np.asarray(panel.image), cmap="gray", vmin=0.0, vmax=1.0, interpolation="bicubic")
        if panel.heatmap is not None:
            heat = np.asarray(panel.heatmap, dtype=np.float64)
            finite = heat[np.isfinite(heat)]
            low, high = panel.heat_range or (0.0, float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
            shown = ax.imshow(
                np.ma.masked_invalid(heat),
                cmap=colormaps[panel.cmap].with_extremes(bad="black" if panel.image is None else "none"),
                vmin=low,
                vmax=high,
                alpha=0.5 if panel.image is not None else 1.0,
                interpolation="bilinear",
            )
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03, label=panel.heat_label)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    _suptitle(fig, title)
    return fig


# --------------------------------------------------------------------------------------------------------------
# Shared


def _suptitle(fig: Figure, title: str) -> None:
    """The figure's title, wrapped to the figure's width so that a long model path or run name is never cut off."""
    characters = max(20, round(fig.get_figwidth() * 11))  # at most about 12 characters fill an inch at 12 pt
    fig.suptitle("\n".join(textwrap.wrap(title, characters)))


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_png(fig, path)
    return path


def _write_png(fig: Figure, target) -> None:
    """`fig` as a PNG into `target` (a path or a binary file), then released."""
    try:
        fig.savefig(target, dpi=DPI, format="png", facecolor="white")
    finally:
        fig.clear()


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _finite(value) -> bool:
    return _is_number(value) and math.isfinite(float(value))


def _interval(value) -> bool:
    """Whether `value` is a [low, high] pair of finite numbers (a `*_ci95` entry of a history record)."""
    return isinstance(value, Sequence) and len(value) == 2 and all(_finite(bound) for bound in value)
