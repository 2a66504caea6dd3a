"""The reproduction study's results (`scripts/reproduce.py`): per-run metrics, per-arm summaries over seeds, paired
comparisons on the same test patients, AUROC against pre-training steps, the table and the figure.

Everything here reads what the recipes and the CLI wrote (`metrics.json`, `test_predictions.npz`, the explain
JSON files); nothing is re-trained or re-evaluated.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from .comparison import paired_auroc_difference, pooled_mean_auroc
from .figures import _new_figure, _save
from .prediction import PREDICTIONS_FILE, load_predictions

__all__ = ["best_validation_auroc", "plot_study", "study_markdown", "summarize_study"]

MAE, SCRATCH, DENSENET = "vit-mae", "vit-scratch", "densenet121"


def summarize_study(
    output_dir: str | Path,
    runs: Sequence[Mapping],
    *,
    arms: Mapping[str, str],
    snapshot_steps: Mapping[str, int],
    mae_steps: int,
    explain: Mapping,
    pretraining_history: Sequence[Mapping] = (),
    baselines: Sequence[str] = (),
    n_bootstrap: int = 1000,
) -> dict:
    """results.json's content.

    Args:
        output_dir: the study's directory; each run's `dir` is relative to it.
        runs: one mapping per fine-tuning run: `arm`, `fraction`, `seed`, `dir`.
        arms: arm name -> description, for the main arms and the ablation (snapshot arms are described here).
        snapshot_steps: arm name -> the pre-training step it was fine-tuned from, for the MAE checkpoints fine-tuned
            to draw the curve (and to choose the `vit-mae` arm's).
        mae_steps: pre-training steps of the checkpoint the `vit-mae` arm was fine-tuned from (marked `chosen` on
            the curve).
        explain: `localization` ({arm: localize JSON}) and `anomaly` (anomaly-eval JSON).
        pretraining_history: the final MAE's `trainer_history.json`, whose held-out reconstruction losses (every
            epoch) and encoder probes (snapshots and end) become `pretraining_diagnostics`.
        baselines: further CNN arms (e.g. `resnet18`), each compared with DenseNet-121 and with the MAE-initialised
            ViT at every label fraction.
    """
    output_dir = Path(output_dir)
    records, predictions = [], {}
    for run in runs:
        metrics = json.loads((output_dir / run["dir"] / "metrics.json").read_text())
        predictions[run["arm"], run["fraction"], run["seed"]] = load_predictions(
            output_dir / run["dir"] / PREDICTIONS_FILE
        )
        per_class = {name: values["auroc"] for name, values in metrics["per_class"].items()}
        # What the recipe's `--mixed_precision auto` resolved to on this machine (speed and numbers depend on it).
        precision = json.loads((output_dir / run["dir"] / "training_args.json").read_text())["mixed_precision"]
        records.append(
            {
                **run,
                "mixed_precision": precision,
                "mean_auroc": metrics["mean_auroc"],
                "mean_auroc_ci95": metrics["mean_auroc_ci95"],
                "mean_auprc": metrics["mean_auprc"],
                "checkpoint": metrics["checkpoint"],
                "per_class_auroc": per_class,
            }
        )

    def group(arm: str, fraction: float) -> list[dict]:
        return [predictions[key] for key in sorted(predictions) if key[0] == arm and key[1] == fraction]

    # Main arms first, then the ablation, then the snapshots by step; within each, the label fractions in order.
    order = [*arms, *sorted(snapshot_steps, key=snapshot_steps.get)]
    summaries = []
    for arm, fraction in sorted({(r["arm"], r["fraction"]) for r in records}, key=lambda k: (order.index(k[0]), k[1])):
        group_records = [r for r in records if r["arm"] == arm and r["fraction"] == fraction]
        values = [r["mean_auroc"] for r in group_records]
        classes = group_records[0]["per_class_auroc"]
        per_class = {
            name: None
            if any(r["per_class_auroc"][name] is None for r in group_records)
            else float(np.mean([r["per_class_auroc"][name] for r in group_records]))
            for name in classes
        }
        pooled = pooled_mean_auroc(group(arm, fraction), n_bootstrap=n_bootstrap)
        summaries.append(
            {
                "arm": arm,
                "description": arms.get(arm, f"ViT, MAE at pre-training step {snapshot_steps.get(arm)}"),
                "fraction": fraction,
                "n_seeds": len(values),
                "mean_auroc_over_seeds": float(np.mean(values)),
                "std_over_seeds": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "seed_averaged_ci95": pooled["mean_auroc_ci95"],
                "per_class_auroc_mean_over_seeds": per_class,
            }
        )

    fractions = sorted({r["fraction"] for r in records})
    # Each paired comparison is bootstrapped once; the table and the curve read the same result.
    paired = functools.cache(
        lambda a, b, fraction: paired_auroc_difference(group(a, fraction), group(b, fraction), n_bootstrap=n_bootstrap)
    )
    low = fractions[0]
    pairs = [(a, b, f) for f in fractions for a, b in ((MAE, SCRATCH), (MAE, DENSENET), (SCRATCH, DENSENET))]
    pairs += [(a, b, f) for f in fractions for arm in baselines for a, b in ((MAE, arm), (arm, DENSENET))]
    pairs += [(MAE, arm, low) for arm in arms if arm not in (MAE, SCRATCH, DENSENET, *baselines)]  # the ablation
    comparisons = [
        {"a": a, "b": b, "fraction": f, **paired(a, b, f)} for a, b, f in pairs if group(a, f) and group(b, f)
    ]

    # AUROC against pre-training steps at the low fraction: scratch is step 0, then every MAE checkpoint by step.
    by_arm = {s["arm"]: s for s in summaries if s["fraction"] == low}
    points = [(0, SCRATCH), *sorted((step, arm) for arm, step in snapshot_steps.items())]
    curve = []
    for steps, arm in points:
        if arm not in by_arm:
            continue
        difference = None if arm == SCRATCH else paired(arm, SCRATCH, low)
        curve.append(
            {
                "pretraining_steps": steps,
                "arm": arm,
                "chosen": arm != SCRATCH and steps == mae_steps,
                "mean_auroc": by_arm[arm]["mean_auroc_over_seeds"],
                "mean_auroc_ci95": by_arm[arm]["seed_averaged_ci95"],
                "minus_scratch": None if difference is None else difference["difference"],
                "minus_scratch_ci95": None if difference is None else difference["difference_ci95"],
                "minus_scratch_p_value": None if difference is None else difference["p_value"],
            }
        )

    target = paired(MAE, SCRATCH, low)
    mae_ci, scratch_ci = by_arm[MAE]["seed_averaged_ci95"], by_arm[SCRATCH]["seed_averaged_ci95"]
    non_overlapping = bool(mae_ci and scratch_ci and mae_ci[0] > scratch_ci[1])
    localization = {arm: _localization(result) for arm, result in explain["localization"].items()}
    anomaly = {key: explain["anomaly"][key] for key in ("hit_rate", "control_hit_rate", "chance_hit_rate", "n_images")}
    anomaly["hit_rate_ci95"] = _rate_ci(anomaly["hit_rate"], anomaly["n_images"])
    diagnostics = _pretraining_diagnostics(pretraining_history)
    return {
        "baselines": list(baselines),
        "runs": records,
        "summaries": summaries,
        "comparisons": comparisons,
        "pretraining_curve": curve,
        "pretraining_diagnostics": diagnostics,
        "explain": {
            "localization": localization,
            "anomaly": anomaly,
        },
        "targets": {
            # The paired difference's two-sided 95 % CI above 0 (a one-sided p < 0.05 is only a 90 % interval's bar).
            "mae_beats_scratch_at_low_fraction": {
                "fraction": low,
                "difference": target["difference"],
                "difference_ci95": target["difference_ci95"],
                "paired_p_value": target["p_value"],
                "non_overlapping_ci": non_overlapping,
                "reached": target["difference_ci95"][0] > 0,
            },
            "probe_above_random_encoder": _probe_target(diagnostics["probe"]),
            # Hit rates above chance: their 95 % CI's lower end above the chance rate.
            "anomaly_above_chance": _above(anomaly["hit_rate_ci95"], anomaly["chance_hit_rate"]),
            "pointing_game_above_chance": {
                arm: _above(v["pointing_game_ci95"], v["chance_pointing_game"]) for arm, v in localization.items()
            },
        },
    }


def best_validation_auroc(run_dir: str | Path) -> float:
    """The validation mean AUROC of the checkpoint a fine-tuning run kept (the recipe keeps its best), read from
    the run's `trainer_history.json`: what the study and the sweep choose by, without reading a test number."""
    history = json.loads((Path(run_dir) / "trainer_history.json").read_text())
    return max(entry["val_mean_auroc"] for entry in history if entry.get("val_mean_auroc") is not None)


def _probe_target(probe: Sequence[Mapping]) -> dict | None:
    """The end of pre-training's probe: is the MAE encoder above the random encoder, the paired 95 % CI above 0?
    None when the history has no paired probe."""
    if not probe or probe[-1].get("probe_minus_random_ci95") is None:
        return None
    last = probe[-1]
    return {
        "step": last["step"],
        "difference": last["probe_minus_random"],
        "difference_ci95": last["probe_minus_random_ci95"],
        "reached": last["probe_minus_random_ci95"][0] > 0,
    }


def _pretraining_diagnostics(history: Sequence[Mapping]) -> dict:
    """What the pre-training learned, as the recipe measured it: per epoch the held-out masked-patch loss next to its
    two trivial predictors, and at each snapshot and the end the encoder's probe next to a random encoder's, and
    their paired difference (None in histories written before the recipe recorded it)."""
    losses = ("heldout_mae_loss", "heldout_visible_mean_loss", "heldout_mean_image_loss")
    probe = ("probe_mean_auroc", "probe_mean_auroc_ci95", "probe_random_mean_auroc", "probe_random_mean_auroc_ci95")
    return {
        "reconstruction": [
            {"step": r["step"], "epoch": r["epoch"], **{key: r[key] for key in losses}}
            for r in history
            if "heldout_mae_loss" in r
        ],
        "probe": [
            {
                "step": r["step"],
                "epoch": r["epoch"],
                "method": r.get("probe_method"),
                **{key: r[key] for key in probe},
                **{key: r.get(key) for key in ("probe_minus_random", "probe_minus_random_ci95")},
            }
            for r in history
            if "probe_mean_auroc" in r
        ],
    }


def _localization(result: Mapping) -> dict:
    keys = ("pointing_game", "chance_pointing_game", "mean_iou", "n_boxes")
    interval = _rate_ci(result["pointing_game"], result["n_boxes"])
    return {**{key: result[key] for key in keys}, "pointing_game_ci95": interval}


def _rate_ci(rate: float, trials: int, z: float = 1.959964) -> list[float] | None:
    """The 95 % Wilson score interval of a hit rate over `trials` (None for none), taken as independent: an image's
    boxes are not quite (one patient, one map), so the pointing game's interval is somewhat narrower than it should
    be. (Written out: scipy, which has it, is no declared dependency.)"""
    if not trials:
        return None
    centre = (rate + z**2 / (2 * trials)) / (1 + z**2 / trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z**2 / (4 * trials**2)) / (1 + z**2 / trials)
    return [max(centre - half, 0.0), min(centre + half, 1.0)]


def _above(interval: list[float] | None, chance: float) -> bool:
    return interval is not None and interval[0] > chance


def _auroc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _probe_auroc(value: float | None, interval) -> str:
    """A probe's AUROC, flagged where its whole 95 % CI lies below chance: the probe then reads something that
    predicts the labels backwards on validation (a split artefact or a bug), not a weak encoder."""
    below = interval is not None and interval[1] < 0.5
    return _auroc(value) + (" (below chance)" if below else "")


def _ci(interval) -> str:
    return "n/a" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table, preceded by a blank line."""
    return [
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def study_markdown(results: Mapping, figure: str | None = None) -> str:
    """The table README shows: per arm and label fraction, mean ± std over seeds and the seed-averaged model's
    patient-bootstrap CI; the paired differences; the curve; the discussion points; date, machine and command."""
    run = results["run"]
    test = results["comparisons"][0] if results["comparisons"] else None
    size = f" ({test['n_patients']:,} patients, {test['n_images']:,} images)" if test else ""
    precisions = ", ".join(sorted({r["mixed_precision"] for r in results["runs"]}))
    # A class whose test labels are all one value has no AUROC; the means are over the others (the recipes').
    per_class = results["summaries"][0]["per_class_auroc_mean_over_seeds"]
    labels = f"{sum(v is not None for v in per_class.values())} of {len(per_class)} labels"
    lines = [
        f"Measured {run['date']} on {run['machine']}: `{run['command']}` (profile `{run['profile']['name']}`, "
        f"{sum(run['seconds'].values()) / 60:.0f} min of steps; fine-tuning precision {precisions}). Test split of "
        f"the NIH-layout phantoms{size}; mean AUROC over the {labels} with both values in test; 95 % CIs by "
        "patient-level bootstrap.",
    ]
    lines += _table(
        ["arm", "labelled patients", "seeds", "mean AUROC (mean ± std over seeds)", "seed-averaged, 95 % CI"],
        [
            [
                s["description"],
                f"{s['fraction']:.0%}",
                str(s["n_seeds"]),
                f"{s['mean_auroc_over_seeds']:.3f}"
                + ("" if s["std_over_seeds"] is None else f" ± {s['std_over_seeds']:.3f}"),
                _ci(s["seed_averaged_ci95"]),
            ]
            for s in results["summaries"]
        ],
    )
    main = [x for x in results["summaries"] if x["arm"] in _main_arms(results)]
    if main:
        lines += _table(
            ["per-class test AUROC, mean over seeds", *(f"{x['arm']} {x['fraction']:.0%}" for x in main)],
            [
                [name, *(_auroc(x["per_class_auroc_mean_over_seeds"][name]) for x in main)]
                for name in main[0]["per_class_auroc_mean_over_seeds"]
            ],
        )
    lines += _table(
        ["paired difference (same test patients)", "labelled", "A − B", "95 % CI", "p (A ≤ B)"],
        [
            [
                f"{c['a']} − {c['b']}",
                f"{c['fraction']:.0%}",
                f"{c['difference']:+.3f}",
                _ci(c["difference_ci95"]),
                f"{c['p_value']:.3f}",
            ]
            for c in results["comparisons"]
        ],
    )
    lines += _table(
        ["pre-training steps", "mean AUROC (low fraction)", "95 % CI", "minus scratch", "95 % CI"],
        [
            [
                f"{p['pretraining_steps']}" + (" (chosen)" if p.get("chosen") else ""),
                f"{p['mean_auroc']:.3f}",
                _ci(p["mean_auroc_ci95"]),
                "" if p["minus_scratch"] is None else f"{p['minus_scratch']:+.3f}",
                "" if p["minus_scratch"] is None else _ci(p["minus_scratch_ci95"]),
            ]
            for p in results["pretraining_curve"]
        ],
    )
    diagnostics = results.get("pretraining_diagnostics") or {}
    if diagnostics.get("probe"):
        lines += _table(
            [
                "encoder probe at pre-training step",
                "MAE encoder",
                "95 % CI",
                "random encoder",
                "95 % CI",
                "MAE − random (paired)",
                "95 % CI",
            ],
            [
                [
                    str(p["step"]),
                    _probe_auroc(p["probe_mean_auroc"], p["probe_mean_auroc_ci95"]),
                    _ci(p["probe_mean_auroc_ci95"]),
                    _probe_auroc(p["probe_random_mean_auroc"], p["probe_random_mean_auroc_ci95"]),
                    _ci(p["probe_random_mean_auroc_ci95"]),
                    "n/a" if p.get("probe_minus_random") is None else f"{p['probe_minus_random']:+.3f}",
                    _ci(p.get("probe_minus_random_ci95")),
                ]
                for p in diagnostics["probe"]
            ],
        )
    explain = results["explain"]
    lines += [""]
    choice = results.get("pretraining_choice")
    if choice:
        others = ", ".join(
            f"{step} {value:.3f}" for step, value in choice["validation"].items() if int(step) != choice["step"]
        )
        lines.append(
            f"- The MAE arm's pre-training checkpoint, chosen on validation: step {choice['step']} (the best "
            f"validation mean AUROC of the seed-0 fine-tuning at {choice['fraction']:.0%}, "
            f"{choice['validation'][str(choice['step'])]:.3f}; the other checkpoints: {others})"
        )
    if diagnostics.get("reconstruction"):
        last = diagnostics["reconstruction"][-1]
        lines.append(
            f"- MAE held-out masked-patch loss at step {last['step']}: {last['heldout_mae_loss']:.4f}, against "
            f"{last['heldout_mean_image_loss']:.4f} for the training mean image and "
            f"{last['heldout_visible_mean_loss']:.4f} for each image's visible-pixel mean"
        )
    for arm, loc in explain["localization"].items():
        lines.append(
            f"- Grad-CAM pointing game, {arm}: {loc['pointing_game']:.3f} {_ci(loc['pointing_game_ci95'])} (chance "
            f"{loc['chance_pointing_game']:.3f}; {loc['n_boxes']} boxes; mean IoU {loc['mean_iou']:.3f})"
        )
    anomaly = explain["anomaly"]
    lines.append(
        f"- MAE anomaly map, {anomaly['n_images']} planted nodules: hit rate {anomaly['hit_rate']:.3f} "
        f"{_ci(anomaly['hit_rate_ci95'])} (untouched images {anomaly['control_hit_rate']:.3f}, chance "
        f"{anomaly['chance_hit_rate']:.3f})"
    )
    target = results["targets"]["mae_beats_scratch_at_low_fraction"]
    lines.append(
        f"- Target (MAE-init beats scratch at {target['fraction']:.0%} of the labels: the paired 95 % CI above 0): "
        f"{'reached' if target['reached'] else 'not reached'} ({target['difference']:+.3f} "
        f"{_ci(target['difference_ci95'])}, one-sided p = {target['paired_p_value']:.3f})"
    )
    probe = results["targets"].get("probe_above_random_encoder")
    if probe:
        lines.append(
            f"- Target (the MAE encoder's probe above a random encoder's at the end of pre-training, step "
            f"{probe['step']}: paired 95 % CI above 0): {'reached' if probe['reached'] else 'not reached'} "
            f"({probe['difference']:+.3f} {_ci(probe['difference_ci95'])})"
        )
    if figure:
        lines += ["", f"![AUROC per arm and label fraction; AUROC against pre-training steps]({figure})"]
    return "\n".join(lines) + "\n"


def _main_arms(results: Mapping) -> list[str]:
    """The two ViTs, DenseNet-121 and any further CNN baselines (`--cnn`), in that order."""
    return [MAE, SCRATCH, DENSENET, *results.get("baselines", ())]


def plot_study(results: Mapping, path: str | Path) -> Path:
    """Three panels (each about 600 px): mean AUROC per arm and label fraction (each seed a dot, the seed-averaged
    CI as a bar); mean AUROC at the low fraction against pre-training steps (CI band; scratch at step 0); and what the
    pre-training learned: the encoder's probe against a random encoder's (CI bars) and the held-out loss as a
    fraction of the training mean image's."""
    fig = _new_figure(18.0, 6.4)
    left, right, learned = fig.subplots(1, 3)
    main_arms = _main_arms(results)
    fractions = sorted({s["fraction"] for s in results["summaries"]})
    width = 0.8 / len(main_arms)
    for i, arm in enumerate(main_arms):
        for j, fraction in enumerate(fractions):
            summary = next((s for s in results["summaries"] if s["arm"] == arm and s["fraction"] == fraction), None)
            if summary is None:
                continue
            x = j + (i - (len(main_arms) - 1) / 2) * width
            low, high = summary["seed_averaged_ci95"] or (np.nan, np.nan)
            left.errorbar(
                x,
                summary["mean_auroc_over_seeds"],
                yerr=[  # clipped: a percentile interval need not contain the mean over seeds
                    [max(summary["mean_auroc_over_seeds"] - low, 0)],
                    [max(high - summary["mean_auroc_over_seeds"], 0)],
                ],
                fmt="s",
                color=f"C{i}",
                capsize=4,
                label=summary["description"] if j == 0 else None,
            )
            seeds = [r["mean_auroc"] for r in results["runs"] if r["arm"] == arm and r["fraction"] == fraction]
            left.scatter(np.full(len(seeds), x + width / 4), seeds, s=14, color=f"C{i}", alpha=0.6)
    left.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (0.5)")
    left.set_xticks(range(len(fractions)), [f"{f:.0%} of labelled patients" for f in fractions])
    left.set_ylabel("test mean AUROC")
    left.set_title("Fine-tuning arms (dots: seeds; bars: 95 % patient-bootstrap CI)")
    _legend_below(left)

    curve = results["pretraining_curve"]
    steps = [p["pretraining_steps"] for p in curve]
    means = [p["mean_auroc"] for p in curve]
    lows = [p["mean_auroc_ci95"][0] if p["mean_auroc_ci95"] else np.nan for p in curve]
    highs = [p["mean_auroc_ci95"][1] if p["mean_auroc_ci95"] else np.nan for p in curve]
    right.plot(steps, means, marker="o", color="C0", label="ViT from the MAE at that step (step 0: scratch)")
    right.fill_between(steps, lows, highs, color="C0", alpha=0.2, label="95 % CI")
    chosen = next((p for p in curve if p.get("chosen")), None)
    if chosen is not None:
        right.plot(chosen["pretraining_steps"], chosen["mean_auroc"], marker="*", markersize=16, color="C1",
                   linestyle="none", label="the MAE arm's checkpoint (chosen on validation)")  # fmt: skip
    right.set_xlabel("MAE pre-training steps")
    right.set_ylabel(f"test mean AUROC, {fractions[0]:.0%} of labelled patients")
    right.set_title("AUROC against pre-training length")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_below(right)
    _plot_pretraining_diagnostics(learned, results.get("pretraining_diagnostics") or {})
    fig.suptitle("Reproduction study on phantoms")
    return _save(fig, path)


def _plot_pretraining_diagnostics(ax, diagnostics: Mapping) -> None:
    """Probe mean AUROC of the MAE encoder and of a random encoder against pre-training steps (left axis, 95 % CI
    bars), and the held-out masked-patch loss / the mean image's (right axis; below 1: more than the mean image)."""
    for key, label, color, shift in (
        ("probe_mean_auroc", "MAE encoder probe", "C0", 0.0),
        ("probe_random_mean_auroc", "random encoder probe", "C7", 0.01),
    ):
        points = [p for p in diagnostics.get("probe", ()) if p[key] is not None]
        if not points:
            continue
        steps = np.array([p["step"] for p in points], dtype=float)
        offset = shift * (steps.max() or 1.0)
        values = np.array([p[key] for p in points])
        cis = np.array([p[key + "_ci95"] or (np.nan, np.nan) for p in points], dtype=float)
        # A percentile interval need not contain its point estimate; clipped, so matplotlib takes it.
        errors = [np.maximum(values - cis[:, 0], 0), np.maximum(cis[:, 1] - values, 0)]
        ax.errorbar(steps + offset, values, yerr=errors, fmt="o-", color=color, capsize=4, label=label)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (0.5)")
    ax.set_xlabel("MAE pre-training steps")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("probe mean AUROC (validation patients)")
    ax.set_title("What pre-training learned")
    reconstruction = diagnostics.get("reconstruction", ())
    if reconstruction:
        ratio_axis = ax.twinx()
        steps = [r["step"] for r in reconstruction]
        ratio = [r["heldout_mae_loss"] / r["heldout_mean_image_loss"] for r in reconstruction]
        ratio_axis.plot(steps, ratio, color="C3", linestyle="--", label="held-out loss / mean image's (right axis)")
        ratio_axis.axhline(1.0, color="C3", linestyle=":", linewidth=1, label="the mean image's loss (ratio 1)")
        ratio_axis.set_ylabel("held-out masked-patch loss / mean image's")
        # One legend below the panel for both axes: inside, it would cover the points.
        handles, labels = ratio_axis.get_legend_handles_labels()
        _legend_below(ax, extra=(handles, labels))
    else:
        _legend_below(ax)


def _legend_below(ax, extra=((), ())) -> None:
    """The panel's legend (with `extra` (handles, labels) from a twin axis) under its x axis, off the data."""
    handles, labels = ax.get_legend_handles_labels()
    handles, labels = [*handles, *extra[0]], [*labels, *extra[1]]
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8)
