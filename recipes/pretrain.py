"""Pre-train a ViT as a masked autoencoder on chest X-rays (Xiao et al., WACV 2023).

    accelerate launch recipes/pretrain.py --config recipes/configs/pretrain_vits_0.3m.yaml --data_dir /data
    accelerate launch --multi_gpu --num_processes 2 recipes/pretrain.py --config ...   # on CPU: ACCELERATE_USE_CPU=1

The paper's recipe (§2.1 of the notes): mask ratio 0.90, RandomResizedCrop scale 0.5-1 + flip, MSE on the masked
patches, AdamW (0.9, 0.95) with weight decay 0.05 (none on biases, norms, position tables and tokens),
lr = 1.5e-4 × global batch / 256, per-iteration warmup then half-cosine. The decoder exists only here: fine-tuning
loads the encoder of `output_dir` and drops the rest.

While it runs, the recipe records what the MAE has learned (training/pretraining_monitor.py): at every epoch end the
masked-patch loss on held-out images next to two predictors that learn nothing, and at every snapshot and at the end
a probe of the encoder on a labelled corpus (`--probe_dataset`) next to the same probe of a random encoder; both go
into trainer_history.json and figures/training_curves.png.
"""

from pathlib import Path

import torch

from cxr_vitmae.data.transforms import evaluation_transform, pretraining_transform
from cxr_vitmae.evaluation.figures import plot_reconstructions
from cxr_vitmae.explain.reconstruction import reconstruct
from cxr_vitmae.hub.provenance import data_restrictions
from cxr_vitmae.model_directory import model_name
from cxr_vitmae.training.arguments import PretrainArguments, parse_recipe_arguments
from cxr_vitmae.training.data import TransformedCorpus, make_train_loader
from cxr_vitmae.training.finish import finish_run, save_history
from cxr_vitmae.training.loop import train
from cxr_vitmae.training.models import build_pretraining_model
from cxr_vitmae.training.pretraining_monitor import PretrainingMonitor
from cxr_vitmae.training.setup import (
    announce_run,
    load_corpus,
    make_accelerator,
    make_optimizer,
    plan_schedule,
    run_recipe,
)

FIGURE_IMAGES = 4


def main(argv: list[str] | None = None) -> None:
    args = parse_recipe_arguments(PretrainArguments, argv)
    output_dir = Path(args.output_dir)
    # Checked before training rather than after it; the rule is the upload set's (`publishable_figures`), so the
    # user's own data (an own-data corpus, or a union with the user's `folders`) is refused as CheXpert is.
    restricted = data_restrictions(args.dataset, args.options())
    if args.push_to_hub and restricted:
        raise SystemExit(
            f"--push_to_hub: {args.dataset} holds images of {' and '.join(restricted)}, and the reconstruction "
            "figures this recipe draws from them may not be published. Train without --push_to_hub, delete "
            "figures/reconstruction_*.png from the output_dir, then run `cxr-vitmae push`."
        )
    accelerator = make_accelerator(args)

    # Data: the training images only (labels, if the corpus has any, are not used). The crop and flip run on the
    # training device by default (`--augment_on`): the loader then only decodes and draws each image's crop.
    splits = load_corpus(args, accelerator)
    unused = [f"{split} ({len(rows)} images)" for split, rows in splits.items() if split != "train"]
    if unused:
        accelerator.print(f"pre-training on the train split only; not read: {', '.join(unused)}")
    augmentation = pretraining_transform(args.image_size, scale=(args.crop_scale_min, 1.0))
    train_loader, device_transform = make_train_loader(args, accelerator, splits["train"], augmentation, None)
    # A fixed handful of images, evaluation-transformed, for the reconstruction figures.
    held_out = splits["validation"] if "validation" in splits else splits["train"]
    figure_corpus = TransformedCorpus(held_out, evaluation_transform(args.image_size), seed=args.seed, label_key=None)
    figure_pixels = torch.stack([figure_corpus[i]["pixel_values"] for i in range(min(FIGURE_IMAGES, len(held_out)))])
    # What the run has learned, cheaply, while it runs: the held-out masked-patch loss against two trivial predictors
    # at every epoch end, and a probe of the encoder on a labelled corpus against a random encoder at every snapshot
    # and at the end (`--diagnostic_images`, `--probe_dataset`).
    monitor = PretrainingMonitor.prepare(args, accelerator, splits)

    # Model, optimiser, per-iteration schedule.
    model = build_pretraining_model(
        args.model,
        image_size=args.image_size,
        mask_ratio=args.mask_ratio,
        norm_pix_loss=args.norm_pix_loss,
        overrides=args.overrides(),
    )
    model, train_loader = accelerator.prepare(model, train_loader)
    # The model itself, under the DDP and torch.compile (`--dynamo_backend`) wrappers: for figures and saving.
    bare_model = accelerator.unwrap_model(model, keep_torch_compile=False)
    schedule = plan_schedule(args, len(train_loader))
    optimizer, scheduler, peak_lr = make_optimizer(model, args, accelerator, schedule)
    optimizer = accelerator.prepare(optimizer)
    # training_args.json, the start banner, the trackers.
    title = f"MAE pre-training on {args.dataset}, mask ratio {args.mask_ratio}"
    announce_run(
        accelerator, args, schedule, peak_lr, recipe="pretrain", title=title, n_train_images=len(splits["train"])
    )
    accelerator.print(monitor.description)
    monitor.start(bare_model, len(train_loader))

    def on_epoch_end(state, is_last: bool) -> None:
        every = args.snapshot_every_epochs
        snapshot = bool(every) and not is_last and state.epoch % max(1, round(every)) == 0
        if snapshot:
            bare_model.save_pretrained(
                output_dir / "snapshots" / f"step-{state.step}",
                is_main_process=accelerator.is_main_process,
                save_function=accelerator.save,
            )
        monitor.at_epoch_end(bare_model, state, probe=snapshot or is_last)
        period = max(1, round(args.reconstruction_every_epochs))
        if not accelerator.is_main_process or not (is_last or state.epoch % period == 0):
            return
        device = next(bare_model.parameters()).device
        patches = bare_model.config.num_patches
        # The same masks at every epoch, from a generator of their own (the training stream is left alone).
        noise = torch.rand(len(figure_pixels), patches, generator=torch.Generator().manual_seed(args.seed))
        views = reconstruct(bare_model, figure_pixels.to(device), noise.to(device))
        plot_reconstructions(
            views["original"].cpu(),
            views["masked"].cpu(),
            views["reconstruction"].cpu(),
            output_dir / "figures" / f"reconstruction_epoch{state.epoch:03d}.png",
            title=f"{model_name(args.model)} MAE on {args.dataset}: reconstructions after epoch {state.epoch} "
            f"(mask ratio {args.mask_ratio})",
        )
        bare_model.train()

    # Training, resumed from --resume_from_checkpoint when given; diagnostics, figures (and snapshots) at epoch ends.
    state = train(
        accelerator, args, model, optimizer, scheduler, train_loader, schedule, on_epoch_end, device_transform
    )

    # The final model, the history and its curves.
    bare_model.save_pretrained(output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save)
    if accelerator.is_main_process:
        save_history(state.history, output_dir, title=f"{model_name(args.model)}: {title}")
    finish_run(accelerator, args)


if __name__ == "__main__":
    run_recipe(main)
