r"""Is the pre-training recipe's probe blind, or has the MAE encoder learned nothing a probe can read? The recipe
probes one readout (the patch tokens after the encoder's final LayerNorm, averaged; k-NN by default); this script
probes a pre-trained MAE's encoder through several readouts (each block's patch tokens averaged, the final normalised
ones, the CLS token) with both probe methods (k-NN, logistic regression), next to the same readouts of a randomly
initialised encoder of the same configuration, with the paired difference, and to the same probes on the images'
pixels (the first channel average-pooled to 16 x 16).

    python scripts/probe_readouts.py demo_output/mae-pretrain --data-dir demo_output/phantoms-prepared \
        --update-results probe-readouts
    python scripts/probe_readouts.py reproduce_output/pretrain/mae --data-dir reproduce_output/corpora/nih

The probes are fitted on whole patients of the corpus's train split and scored on whole patients of its validation
split, with patient-bootstrap 95 % CIs (the MAE-minus-random difference paired: both probes scored on each draw of
patients). No test image is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from results_section import machine, positive_int, update_results_section

from cxr_vitmae.data import label_names, load_cxr_dataset
from cxr_vitmae.errors import InputError
from cxr_vitmae.evaluation.pretraining_diagnostics import probe_difference, probe_features, random_encoder
from cxr_vitmae.models import CXRViTMAEForPreTraining
from cxr_vitmae.training.pretraining_monitor import (
    PROBE_BOOTSTRAP,
    PROBE_NEIGHBOURS,
    estimate_text,
    patient_sample,
    probe_data,
)

PIXEL_GRID = 16  # the pixel reference: each image's first channel average-pooled to 16 x 16
METHODS = ("knn", "logistic")


@torch.inference_mode()
def readouts(encoder: torch.nn.Module, pixels: torch.Tensor, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Every readout of `encoder` for `pixels`, as (N, hidden_size) arrays: the mean of the patch tokens after
    each block (before the final LayerNorm), after the final LayerNorm (the recipe's probe), and the CLS token."""
    batches: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(pixels), batch_size):
        output = encoder(pixels[start : start + batch_size].float(), output_hidden_states=True, return_dict=True)
        features = {f"block {i} patch mean": h[:, 1:].mean(dim=1) for i, h in enumerate(output.hidden_states[1:], 1)}
        features["final patch mean (the recipe's)"] = output.last_hidden_state[:, 1:].mean(dim=1)
        features["final CLS token"] = output.last_hidden_state[:, 0]
        for name, value in features.items():
            batches.setdefault(name, []).append(value)
    return {name: torch.cat(values).numpy() for name, values in batches.items()}


def pixel_readout(pixels: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.adaptive_avg_pool2d(pixels[:, :1].float(), PIXEL_GRID).flatten(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mae", type=Path, help="a pre-trained MAE directory (recipes/pretrain.py's output)")
    parser.add_argument("--data-dir", type=Path, required=True, help="a labelled corpus (or its prepared copy)")
    parser.add_argument("--dataset", default="nih-chestxray14", help="the corpus's name (default: %(default)s)")
    parser.add_argument("--train-images", type=positive_int, default=1024,
                        help="at most this many train images, whole patients (default: %(default)s)")  # fmt: skip
    parser.add_argument("--eval-images", type=positive_int, default=512,
                        help="at most this many validation images, whole patients (default: %(default)s)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0,
                        help="draws the patients and the random encoder (default: %(default)s)")  # fmt: skip
    parser.add_argument("--output", type=Path, help="the JSON (default: MAE/probe_readouts.json)")
    parser.add_argument("--update-results", metavar="SECTION",
                        help="the table into docs/results.md, between <!-- SECTION:start/end -->")  # fmt: skip
    args = parser.parse_args()

    if not (args.mae / "config.json").is_file():
        raise SystemExit(f"{args.mae}: no config.json; expected a pre-trained MAE directory (recipes/pretrain.py)")
    mae = CXRViTMAEForPreTraining.from_pretrained(args.mae).eval()
    try:
        splits = load_cxr_dataset(args.dataset, args.data_dir)
    except InputError as error:  # a corpus the user named that is missing or malformed: one line, as the CLI prints
        raise SystemExit(f"--dataset {args.dataset} --data-dir {args.data_dir}: {error}") from None
    for split in ("train", "validation"):
        if split not in splits:
            raise SystemExit(f"--dataset {args.dataset} in {args.data_dir} has no {split} split (only {list(splits)})")
    train = patient_sample(splits["train"], args.train_images, args.seed)
    evaluation = patient_sample(splits["validation"], args.eval_images, args.seed)
    data = probe_data(train, evaluation, mae.config.image_size, seed=args.seed,
                      class_names=label_names(args.dataset, args.data_dir))  # fmt: skip
    train_pixels, eval_pixels = data["train_pixels"], data["eval_pixels"]

    def probe(train_features: np.ndarray, eval_features: np.ndarray, method: str) -> dict:
        return probe_features(
            train_features, data["train_labels"], eval_features, data["eval_labels"], label_names=data["label_names"],
            eval_patient_ids=data["eval_patients"], method=method, k=PROBE_NEIGHBOURS, n_bootstrap=PROBE_BOOTSTRAP,
            seed=args.seed,
        )  # fmt: skip

    def kept(result: dict) -> dict:
        return {key: result[key] for key in ("mean_auroc", "mean_auroc_ci95")}

    encoders = {"mae": mae.vit, "random": random_encoder(mae.config, args.seed)}
    features = {name: (readouts(e, train_pixels), readouts(e, eval_pixels)) for name, e in encoders.items()}
    rows = []
    for readout in features["mae"][0]:
        for method in METHODS:
            ours, baseline = (probe(features[n][0][readout], features[n][1][readout], method) for n in encoders)
            difference = probe_difference(
                ours, baseline, data["eval_labels"], data["eval_patients"], n_bootstrap=PROBE_BOOTSTRAP, seed=args.seed
            )
            rows.append({"readout": readout, "method": method, "mae": kept(ours), "random": kept(baseline),
                         "mae_minus_random": difference})  # fmt: skip
    train_grid, eval_grid = pixel_readout(train_pixels), pixel_readout(eval_pixels)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "command": " ".join(["python", "scripts/probe_readouts.py", *sys.argv[1:]]), "dataset": args.dataset,
        "n_train": len(train), "n_eval": len(evaluation), "rows": rows,
        "pixels": {method: kept(probe(train_grid, eval_grid, method)) for method in METHODS},
    }  # fmt: skip
    output = args.output or args.mae / "probe_readouts.json"
    output.write_text(json.dumps(result, indent=2) + "\n")
    report = readouts_report(result)
    print(report)
    print(f"-> {output}")
    if args.update_results:
        update_results_section(args.update_results, report)


def _auroc(probe: dict) -> str:
    return estimate_text(probe["mean_auroc"], probe["mean_auroc_ci95"])


def _difference(difference: dict) -> str:
    return estimate_text(difference["difference"], difference["difference_ci95"], signed=True)


def readouts_report(result: dict) -> str:
    """The table as Markdown, every number from `result` (the script's JSON)."""
    lines = [
        f"Measured {result['date']} on {result['machine']}: `{result['command']}`. Probes fitted on "
        f"{result['n_train']} {result['dataset']} train images, mean AUROC on {result['n_eval']} validation images "
        f"(95 % patient-bootstrap CIs; MAE − random paired).",
        "",
        "| readout | probe | MAE encoder | random encoder | MAE − random (paired) |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['readout']} | {row['method']} | {_auroc(row['mae'])} | {_auroc(row['random'])} | "
            f"{_difference(row['mae_minus_random'])} |"
        )
    for method, probe in result["pixels"].items():
        lines.append(f"| pixels, {PIXEL_GRID} × {PIXEL_GRID} | {method} | {_auroc(probe)} | (no encoder) | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
