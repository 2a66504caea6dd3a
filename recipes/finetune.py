"""Fine-tune a ViT (from an MAE pre-training directory, a converted checkpoint or scratch) or a DenseNet for chest
X-ray classification, select the checkpoint on validation, and evaluate the test split once.

    accelerate launch recipes/finetune.py --config recipes/configs/finetune_vits_nih.yaml --data_dir /data/nih
    accelerate launch --multi_gpu --num_processes 2 recipes/finetune.py --config ...   # on CPU: ACCELERATE_USE_CPU=1

The paper's recipe (Xiao et al., WACV 2023, §2.2 of the notes): AdamW, layer-wise lr decay 0.55 (ViT), drop path
0.2, RandAugment m6, warmup + half-cosine per iteration, BCE with NaN-masked targets (CE for COVIDx). Unlike the
paper's code, which reported the best of about eight test-set evaluations, the test split is evaluated exactly once,
with the checkpoint that scored best on validation.
"""

import json
import shutil
from pathlib import Path

from cxr_vitmae.data import label_names
from cxr_vitmae.data.transforms import evaluation_transform, finetuning_transform
from cxr_vitmae.evaluation import classification_metrics, roc_curves
from cxr_vitmae.evaluation.evaluate_model import evaluate_split
from cxr_vitmae.evaluation.figures import plot_roc_curves
from cxr_vitmae.evaluation.prediction import PREDICTIONS_FILE, predict, save_predictions
from cxr_vitmae.model_directory import model_name
from cxr_vitmae.model_families import family_of
from cxr_vitmae.training.arguments import FinetuneArguments, parse_recipe_arguments
from cxr_vitmae.training.data import TransformedCorpus, make_loader, make_train_loader
from cxr_vitmae.training.finish import finish_run, save_history
from cxr_vitmae.training.loop import train
from cxr_vitmae.training.models import build_classifier
from cxr_vitmae.training.setup import (
    announce_run,
    check_validation_selects,
    load_corpus,
    make_accelerator,
    make_optimizer,
    plan_schedule,
    run_recipe,
)


def main(argv: list[str] | None = None) -> None:
    args = parse_recipe_arguments(FinetuneArguments, argv)
    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(args)

    # Data: the corpus's splits, the paper's transforms, loaders whose randomness is a function of (seed, epoch).
    splits = load_corpus(args, accelerator)
    names = label_names(args.dataset, args.data_dir, **args.options())
    single_label = "label" in splits["train"].features
    label_key = "label" if single_label else "labels"
    # Refused here, before any training: model selection needs a validation split, the report a test split.
    for split, why in (("validation", "model selection"), ("test", "the final evaluation")):
        if split not in splits:
            raise SystemExit(
                f"{args.dataset}{f' in {args.data_dir}' if args.data_dir else ''} has no {split} split with "
                f"dataset_options {args.options()} "
                f"(only {', '.join(splits)}): {why} needs one (the corpus's split options in README; for csv and "
                "hf: test_fraction, or test rows in a split column)"
            )
    if not single_label:
        check_validation_selects(splits["validation"], args.dataset)
    # The crop and flip run on the training device when that is all the augmentation is (`--augment_on`);
    # RandAugment's PIL operations keep it in the loader.
    augmentation = finetuning_transform(args.image_size, args.auto_augment, scale=(args.crop_scale_min, 1.0))
    train_loader, device_transform = make_train_loader(args, accelerator, splits["train"], augmentation, label_key)
    validation_loader = make_loader(
        TransformedCorpus(
            splits["validation"], evaluation_transform(args.image_size), seed=args.seed, label_key=label_key
        ),
        batch_size=args.per_device_eval_batch_size,
        shuffle=False,
        num_workers=args.dataloader_num_workers,
        persistent_workers=True,
    )

    # Model, optimiser (layer-wise lr decay for ViTs), per-iteration schedule.
    model = build_classifier(
        args.model,
        label_names=names,
        single_label=single_label,
        image_size=args.image_size,
        drop_path=args.drop_path,
        overrides=args.overrides(),
    )
    model, train_loader, validation_loader = accelerator.prepare(model, train_loader, validation_loader)
    # The model itself, under the DDP and torch.compile (`--dynamo_backend`) wrappers: for saving and reloading.
    bare_model = accelerator.unwrap_model(model, keep_torch_compile=False)
    schedule = plan_schedule(args, len(train_loader))
    layer_decay = args.layer_decay if family_of(bare_model).layer_decay else None  # transformer blocks only
    optimizer, scheduler, peak_lr = make_optimizer(model, args, accelerator, schedule, layer_decay)
    optimizer = accelerator.prepare(optimizer)
    # training_args.json, the start banner, the trackers.
    title = f"fine-tuning {type(bare_model).__name__} on {args.dataset}, layer decay {layer_decay}"
    announce_run(
        accelerator, args, schedule, peak_lr, recipe="finetune", title=title, n_train_images=len(splits["train"])
    )

    # Validation at epoch ends; the best model so far is kept in output_dir/best.
    selection_metric = "accuracy" if single_label else "mean_auroc"
    best_dir = output_dir / "best"

    def validate(state, is_last: bool) -> None:
        if not is_last and state.epoch % max(1, round(args.eval_every_epochs)) != 0:
            return
        prediction = predict(accelerator, model, validation_loader)
        labels = prediction["labels"] if not single_label else prediction["labels"].astype(int)
        metrics = classification_metrics(
            prediction["scores"],
            labels,
            label_names=names,
            patient_ids=None,
            problem_type=_problem(single_label),
            n_bootstrap=0,
        )
        value = metrics[selection_metric]
        record = {
            "step": state.step,
            "epoch": state.epoch,
            f"val_{selection_metric}": value,
            "n_validation_images": metrics["n_images"],
        }
        if value is not None and (state.best is None or value > state.best[f"val_{selection_metric}"]):
            record["selected"] = True
            state.best = record
            bare_model.save_pretrained(
                best_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save
            )
        state.history.append(record)
        if value is not None:
            accelerator.log({f"val_{selection_metric}": value}, step=state.step)
        accelerator.print(
            f"epoch {state.epoch}: validation {selection_metric} "
            + (f"{value:.4f}" if value is not None else "undefined (no class has both label values)")
        )
        accelerator.wait_for_everyone()

    # Training, resumed from --resume_from_checkpoint when given; validation at epoch ends.
    state = train(accelerator, args, model, optimizer, scheduler, train_loader, schedule, validate, device_transform)

    # The checkpoint selected on validation becomes the final model; the test split is evaluated once, from that
    # directory, by the function `cxr-vitmae evaluate` runs (its image processor, float32), so both give one number.
    if state.best is None:
        raise SystemExit(f"no validation {selection_metric} could be computed; no checkpoint was selected")
    checkpoint = f"epoch-{state.best['epoch']}"
    if accelerator.is_main_process:
        bare_model.load_state_dict(type(bare_model).from_pretrained(best_dir).state_dict())
        bare_model.save_pretrained(output_dir)
    accelerator.wait_for_everyone()
    metrics, prediction = evaluate_split(
        accelerator,
        output_dir,
        splits["test"],
        dataset=args.dataset,
        split="test",
        data_dir=args.data_dir,
        options=args.options(),
        batch_size=args.per_device_eval_batch_size,
        num_workers=args.dataloader_num_workers,
        n_bootstrap=args.n_bootstrap,
    )
    state.history.append({"step": state.step, "event": "test", "checkpoint": checkpoint})
    if accelerator.is_main_process:
        metrics.update(selected_by=f"validation {selection_metric}", checkpoint=checkpoint)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        save_predictions(output_dir / PREDICTIONS_FILE, prediction, splits["test"])
        save_history(state.history, output_dir, title=f"{model_name(args.model)}: {title}")
        plot_roc_curves(
            roc_curves(prediction["scores"], prediction["labels"], names, problem_type=_problem(single_label)),
            {name: values["auroc"] for name, values in metrics["per_class"].items()},
            output_dir / "figures" / "roc_test.png",
            # No class of a tiny test split may have both label values: the mean is then undefined (None).
            title=f"{args.dataset} test ({metrics['split_source']}), mean AUROC "
            + ("undefined" if metrics["mean_auroc"] is None else f"{metrics['mean_auroc']:.3f}"),
        )
        shutil.rmtree(best_dir)
        accelerator.print(
            json.dumps({k: metrics[k] for k in ("split_source", "mean_auroc", "mean_auroc_ci95", "accuracy")})
        )
    finish_run(accelerator, args)


def _problem(single_label: bool) -> str:
    return "single_label_classification" if single_label else "multi_label_classification"


if __name__ == "__main__":
    run_recipe(main)
