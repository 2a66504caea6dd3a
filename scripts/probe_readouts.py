"""Is the pre-training recipe's probe blind, or has the MAE encoder learned nothing a probe can read? The recipe
probes one readout (the mean of the last layer's patch tokens, k-NN); this script probes a pre-trained MAE's encoder
through every readout a ViT offers (the mean of each block's patch tokens, the final normalised tokens, the CLS
token), with both probe methods (k-NN, logistic regression), next to the same readouts of a randomly initialised
encoder of the same configuration and to the same probes on the images' own pixels (average-pooled to 16 x 16).

    python scripts/probe_readouts.py demo_output/mae-pretrain --data-dir demo_output/phantoms-prepared
    python scripts/probe_readouts.py reproduce_output/pretrain/mae --data-dir reproduce_output/corpora/nih \
        --output probe_readouts.json --update-results

The probes are fitted on whole patients of the corpus's train split and scored on whole patients of its validation
split (patient-bootstrap 95 % CIs); no test image is read, and nothing here is chosen from these numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from results_section import add_update_results_flag, machine, update_results_section

from cxr_vitmae.data import label_names, load_cxr_dataset
from cxr_vitmae.evaluation.pretraining_diagnostics import evaluation_pixels, probe_features, random_encoder
from cxr_vitmae.models import CXRViTMAEForPreTraining
from cxr_vitmae.training.pretraining_monitor import patient_sample

PIXEL_GRID = 16  # the pixel reference: each image average-pooled to 16 x 16
N_BOOTSTRAP = 200
PROBE_NEIGHBOURS = 20  # as the recipe's k-NN probe


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
    parser.add_argument("--dataset", default="nih-chestxray14")
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--eval-images", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("probe_readouts.json"))
    add_update_results_flag(parser, "put the table into docs/results.md")
    args = parser.parse_args()

    mae = CXRViTMAEForPreTraining.from_pretrained(args.mae).eval()
    size = mae.config.image_size
    splits = load_cxr_dataset(args.dataset, args.data_dir)
    names = label_names(args.dataset, args.data_dir)
    train = patient_sample(splits["train"], args.train_images, args.seed)
    evaluation = patient_sample(splits["validation"], args.eval_images, args.seed)
    train_labels = np.asarray(train.select_columns(["labels"])[:]["labels"], dtype=np.float64)
    eval_columns = evaluation.select_columns(["labels", "patient_id"])[:]
    eval_labels = np.asarray(eval_columns["labels"], dtype=np.float64)
    train_pixels = evaluation_pixels(train, size, seed=args.seed)
    eval_pixels = evaluation_pixels(evaluation, size, seed=args.seed)

    def probe(train_features: np.ndarray, eval_features: np.ndarray, method: str) -> dict:
        result = probe_features(
            train_features, train_labels, eval_features, eval_labels, label_names=names,
            eval_patient_ids=eval_columns["patient_id"], method=method, k=PROBE_NEIGHBOURS,
            n_bootstrap=N_BOOTSTRAP, seed=args.seed,
        )  # fmt: skip
        return {"mean_auroc": result["mean_auroc"], "mean_auroc_ci95": result["mean_auroc_ci95"]}

    encoders = {"mae": mae.vit, "random": random_encoder(mae.config, args.seed)}
    features = {name: (readouts(e, train_pixels), readouts(e, eval_pixels)) for name, e in encoders.items()}
    rows = []
    for readout in features["mae"][0]:
        for method in ("knn", "logistic"):
            row = {"readout": readout, "method": method}
            for name, (train_features, eval_features) in features.items():
                row[name] = probe(train_features[readout], eval_features[readout], method)
            rows.append(row)
    train_grid, eval_grid = pixel_readout(train_pixels), pixel_readout(eval_pixels)
    pixels = {method: probe(train_grid, eval_grid, method) for method in ("knn", "logistic")}
    result = {
        "mae": str(args.mae), "data_dir": str(args.data_dir), "dataset": args.dataset, "machine": machine(),
        "n_train": len(train), "n_eval": len(evaluation), "rows": rows, "pixels": pixels,
    }  # fmt: skip
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    report = readouts_report(result)
    print(report)
    if args.update_results:
        update_results_section("probe-readouts", report)


def _auroc(probe: dict) -> str:
    low, high = probe["mean_auroc_ci95"]
    return f"{probe['mean_auroc']:.3f} [{low:.3f}, {high:.3f}]"


def readouts_report(result: dict) -> str:
    """The table as Markdown, every number from `result` (the script's JSON)."""
    lines = [
        f"Measured by `python scripts/probe_readouts.py {result['mae']} --data-dir {result['data_dir']}` on "
        f"{result['machine']}: probes fitted on {result['n_train']} {result['dataset']} train images, mean AUROC on "
        f"{result['n_eval']} validation images (95 % patient-bootstrap CIs).",
        "",
        "| readout | probe | MAE encoder | random encoder | MAE − random |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        difference = row["mae"]["mean_auroc"] - row["random"]["mean_auroc"]
        lines.append(
            f"| {row['readout']} | {row['method']} | {_auroc(row['mae'])} | {_auroc(row['random'])} | "
            f"{difference:+.3f} |"
        )
    for method, probe in result["pixels"].items():
        lines.append(f"| pixels, {PIXEL_GRID} × {PIXEL_GRID} | {method} | {_auroc(probe)} | (no encoder) | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
