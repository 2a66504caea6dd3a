"""Which MAE pre-training regime learns something transferable on the phantoms, measured cheaply before any
fine-tuning: the pre-training recipe's own diagnostics (held-out masked-patch loss against the training set's mean
image, and a k-NN probe of the encoder against a random encoder's) for each regime the public evidence on small-data
MAE points to (issue 27: tokens per image, mask ratio, `norm_pix_loss`, pre-training length).

    python scripts/sweep_mae.py --output sweep_output                  # the regimes below, about 40 min on 2 cores
    python scripts/sweep_mae.py --output sweep_output --update-results # also the table into docs/results.md

Every run is `accelerate launch recipes/pretrain.py --config recipes/configs/demo_pretrain.yaml` on the same
NIH-layout phantoms (prepared once) with the regime's flags and the same wall-clock-sized step budget per regime; the
probe is fitted on the phantoms' train patients and scored on their validation patients (selection on validation
only; no test image is read). A regime's row: the final held-out loss as a fraction of the mean-image predictor's
(below 1: the encoder-decoder infers masked content from the visible patches), and the probe's mean AUROC minus the
random encoder's (above 0 with its CI: features that carry the labels). Re-running skips the regimes already done.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from reproduce import CPU_LAUNCH  # one process with every core, bf16 only where native
from results_section import add_update_results_flag, machine, update_results_section

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASE_CONFIG = "recipes/configs/demo_pretrain.yaml"


@dataclass(frozen=True)
class Regime:
    name: str
    why: str
    patch_size: int
    mask_ratio: float
    norm_pix_loss: bool = False
    layers: int = 6


REGIMES = (
    Regime("study", "the study's regime: 64 tokens, 6 visible", patch_size=8, mask_ratio=0.9),
    Regime("mask-0.75", "small-image MIM's ratio at 64 tokens (keras-io, 0.75 > 0.6)", patch_size=8, mask_ratio=0.75),
    Regime("tokens-256", "4-px patches: 256 tokens, 26 visible at 0.9 (the paper's 20 of 196)", 4, 0.9, layers=4),
    Regime("tokens-256-mask-0.75", "256 tokens at 0.75 (IcarusWizard's CIFAR MAE)", 4, 0.75, layers=4),
    Regime("norm-pix", "per-patch normalised targets (MAE's better ImageNet setting)", 8, 0.9, norm_pix_loss=True),
)


def run(command: list[str], log: Path) -> float:
    print("$ " + " ".join(map(str, command)), flush=True)
    start = time.perf_counter()
    with log.open("w") as stream:
        result = subprocess.run(list(map(str, command)), cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"failed (exit {result.returncode}); its output: {log}")
    return time.perf_counter() - start


def corpus(output: Path, images: int, size: int) -> Path:
    phantoms, prepared = output / "phantoms", output / "prepared"
    if not (prepared / "cxr_vitmae_prepared.json").is_file():
        cli = BIN / "cxr-vitmae"
        run([cli, "phantoms", "--output", phantoms, "--num-images", images, "--size", size, "--seed", 0],
            output / "phantoms.log")  # fmt: skip
        run([cli, "prepare", "nih-chestxray14", "--data-dir", phantoms, "--output", prepared, "--size", 64],
            output / "prepare.log")  # fmt: skip
    return prepared


def pretrain(regime: Regime, data_dir: Path, output: Path, steps: int) -> dict:
    """One regime's pre-training with the diagnostics at the end; its summary (kept, so a re-run skips it)."""
    run_dir = output / regime.name
    summary_file = run_dir / "sweep_summary.json"
    if summary_file.is_file():
        return json.loads(summary_file.read_text())
    overrides = f"{{patch_size: {regime.patch_size}, num_hidden_layers: {regime.layers}}}"
    flags = ["--config", BASE_CONFIG, "--data_dir", data_dir, "--output_dir", run_dir, "--probe_data_dir", data_dir,
             "--model_overrides", overrides, "--mask_ratio", regime.mask_ratio, "--norm_pix_loss", regime.norm_pix_loss,
             "--max_train_steps", steps]  # fmt: skip
    launch = [BIN / "accelerate", "launch", *CPU_LAUNCH, "recipes/pretrain.py", *flags]
    seconds = run(launch, output / f"{regime.name}.log")
    history = json.loads((run_dir / "trainer_history.json").read_text())
    held_out = [entry for entry in history if "heldout_mae_loss" in entry]
    last, probe = held_out[-1], [entry for entry in history if "probe_mean_auroc" in entry][-1]
    summary = {
        "regime": regime.name,
        "why": regime.why,
        "patch_size": regime.patch_size,
        "tokens": (64 // regime.patch_size) ** 2,
        "mask_ratio": regime.mask_ratio,
        "norm_pix_loss": regime.norm_pix_loss,
        "encoder_layers": regime.layers,
        "steps": steps,
        "epochs": last["epoch"],
        "heldout_mae_loss": last["heldout_mae_loss"],
        "heldout_mean_image_loss": last["heldout_mean_image_loss"],
        "loss_vs_mean_image": last["heldout_mae_loss"] / last["heldout_mean_image_loss"],
        "probe_mean_auroc": probe["probe_mean_auroc"],
        "probe_mean_auroc_ci95": probe["probe_mean_auroc_ci95"],
        "probe_random_mean_auroc": probe["probe_random_mean_auroc"],
        "probe_random_mean_auroc_ci95": probe["probe_random_mean_auroc_ci95"],
        "seconds": seconds,
    }
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Measured by `python scripts/sweep_mae.py` on {machine()}: {args.images} NIH-layout phantoms ({args.size} px, "
        f"seed 0) prepared at 64 px, the demo's pre-training config with each regime's flags, {args.steps} steps at "
        "batch 64 each; k-NN probe (k = 20, cosine) of the pooled encoder fitted on at most 256 train-patient images "
        "and scored on at most 256 validation-patient images (95 % patient-bootstrap CIs). Loss ratio: final "
        "held-out masked-patch loss / the training mean image's (in the regime's own target space).",
        "",
        "| regime | tokens (visible) | mask | norm pix | loss / mean image | probe AUROC, MAE | probe AUROC, random "
        "| MAE − random | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        visible = round(row["tokens"] * (1 - row["mask_ratio"]))
        low, high = row["probe_mean_auroc_ci95"] or (float("nan"), float("nan"))
        rlow, rhigh = row["probe_random_mean_auroc_ci95"] or (float("nan"), float("nan"))
        lines.append(
            f"| {row['regime']} | {row['tokens']} ({visible}) | {row['mask_ratio']} | {row['norm_pix_loss']} | "
            f"{row['loss_vs_mean_image']:.2f} | {row['probe_mean_auroc']:.3f} [{low:.3f}, {high:.3f}] | "
            f"{row['probe_random_mean_auroc']:.3f} [{rlow:.3f}, {rhigh:.3f}] | "
            f"{row['probe_mean_auroc'] - row['probe_random_mean_auroc']:+.3f} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("sweep_output"))
    parser.add_argument("--images", type=int, default=3000, help="phantoms (default: %(default)s, the demo's)")
    parser.add_argument("--size", type=int, default=128, help="phantom side in pixels (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=640, help="pre-training steps per regime (default: the demo's)")
    parser.add_argument("--regimes", nargs="+", default=[regime.name for regime in REGIMES])
    add_update_results_flag(parser, "write the table into docs/results.md (section 'sweep')")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    data_dir = corpus(args.output, args.images, args.size)
    chosen = [regime for regime in REGIMES if regime.name in args.regimes]
    rows = [pretrain(regime, data_dir, args.output, args.steps) for regime in chosen]
    text = table(rows, args)
    (args.output / "sweep.md").write_text(text + "\n")
    (args.output / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)
    if args.update_results:
        update_results_section("sweep", text)


if __name__ == "__main__":
    main()
