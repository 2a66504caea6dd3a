"""What both recipes do once training is over: the loop's history and its curves, and closing the run (trackers,
`--push_to_hub`)."""

import json
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from ..evaluation.figures import plot_training_curves
from ..hub.provenance import TRAINER_HISTORY_NAME
from ..hub.push import push_to_hub
from .arguments import RecipeArguments


def save_history(history: list[dict[str, Any]], output_dir: str | Path, title: str) -> None:
    """The loop's records as output_dir/trainer_history.json and figures/training_curves.png titled `title`
    (main process)."""
    output_dir = Path(output_dir)
    (output_dir / TRAINER_HISTORY_NAME).write_text(json.dumps(history, indent=2) + "\n")
    plot_training_curves(history, output_dir / "figures" / "training_curves.png", title=title)


def finish_run(accelerator: Accelerator, args: RecipeArguments) -> None:
    """Close the `--report_to` trackers and, with `--push_to_hub`, upload output_dir from the main process."""
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        commit = push_to_hub(args.output_dir, args.hub_model_id, private=args.hub_private_repo)
        print(f"pushed {args.output_dir} to {commit.commit_url}")
