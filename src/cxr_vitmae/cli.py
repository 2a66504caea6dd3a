"""The `cxr-vitmae` command line: one entry point, one subcommand per job."""

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import InputError, MissingExtraError
from .model_directory import model_name
from .models.image_processing_cxr import RadiographReadError

# What the user can fix from the message alone (corpus and conversion errors are InputErrors), printed as one line;
# anything else is a bug and keeps its traceback.
USER_ERRORS = (InputError, RadiographReadError, MissingExtraError)

SUBCOMMANDS = {}


def subcommand(name: str, help_text: str, output_files: tuple[str, ...] = ()):
    """Register `function(parser)` as the argument builder of subcommand `name`; it returns the runner.
    `output_files` name the arguments that are files the command writes: their directories are checked before any
    work starts, so a typo does not cost a finished computation."""

    def decorate(build):
        SUBCOMMANDS[name] = (help_text, build, output_files)
        return build

    return decorate


def check_output_file(path: str | None) -> None:
    """InputError unless `path` (when given) can be created as a file: its directory exists and it is no directory."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{path}: is a directory; expected the path of a file to write")
    if not target.absolute().parent.is_dir():
        raise InputError(f"{path}: directory {target.absolute().parent} does not exist; create it first")


@subcommand(
    "predict",
    "label probabilities of images (files, folders, globs, .txt lists): JSON, or a resumable CSV/JSONL/Parquet file",
    ("output", "errors"),
)
def build_predict(parser: argparse.ArgumentParser):
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved classifier directory or a Hub repo id")
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="PNG (8/16-bit), JPEG or DICOM files; folders (recursive); glob patterns; .txt files listing one path per "
        "line (relative to the list's folder)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write one row per image (image, then one probability per label) to FILE.csv, .jsonl or .parquet, "
        "batch by batch; unreadable images are listed in the errors file and skipped (default: JSON on stdout)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the rows already in --output and score only the other images"
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image (with --output)")
    parser.add_argument("--errors", metavar="FILE", help="the errors file (default: OUTPUT.errors.csv)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument(
        "--num-workers", type=int, help="processes decoding images (default: the usable cores less one, at most 8)"
    )
    add_device_option(parser)

    def run(args: argparse.Namespace) -> None:
        from .batch_predict import expand_inputs, predict_to_dict, predict_to_file
        from .predict import load_classifier
        from .prediction_files import output_format

        if args.output is None and (args.resume or args.errors):
            raise InputError(f"{'--resume' if args.resume else '--errors'} needs --output FILE")
        if args.output is not None:
            output_format(args.output)  # an unknown suffix is refused before the model loads
        images = expand_inputs(args.inputs)
        model, processor = load_classifier(args.model_dir, args.device)
        options = {"batch_size": args.batch_size, "num_workers": args.num_workers}
        if args.output is None:
            json.dump(predict_to_dict(model, processor, images, **options), sys.stdout, indent=2)
            sys.stdout.write("\n")
            return
        try:
            done = predict_to_file(model, processor, images, args.output, resume=args.resume, strict=args.strict,
                                   errors=args.errors, **options)  # fmt: skip
        except KeyboardInterrupt:
            # Every finished batch is in the file: nothing is lost, and the rerun takes up where this one stopped.
            raise SystemExit(f"cxr-vitmae predict: interrupted; the rows written so far are in {args.output}, rerun "
                             "with --resume to continue") from None  # fmt: skip
        resumed = f" ({done.already_done} already there)" if done.already_done else ""
        unreadable = f"; {done.unreadable} unreadable, listed in {done.errors_file}" if done.unreadable else ""
        print(f"{done.scored} images scored{resumed}{unreadable} -> {args.output}")

    return run


@subcommand(
    "evaluate", "metrics.json of a saved classifier on a corpus split (AUROC/AUPRC, bootstrap CIs)", ("output",)
)
def build_evaluate(parser: argparse.ArgumentParser):
    add_model_on_split_arguments(parser, "the corpus name", output="metrics.json")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    # Both default to what MODEL_DIR/metrics.json records for this split, so a recipe's numbers come back exactly.
    parser.add_argument("--n-bootstrap", type=int, help="patient bootstrap resamples (default: as recorded, else 1000)")
    parser.add_argument("--bootstrap-seed", type=int, help="seed of the resampling (default: as recorded, else 0)")

    def run(args: argparse.Namespace) -> None:
        from .evaluation.evaluate_model import describe_label_mapping, evaluate_model

        metrics = evaluate_model(**model_on_split(args), batch_size=args.batch_size, num_workers=args.num_workers,
                                 n_bootstrap=args.n_bootstrap, bootstrap_seed=args.bootstrap_seed)  # fmt: skip
        Path(args.output).write_text(json.dumps(metrics, indent=2) + "\n")
        if "label_mapping" in metrics:
            print(describe_label_mapping(metrics["label_mapping"], args.dataset))
        print(f"{args.dataset} {args.split} ({metrics['n_images']} images): {metric_summary(metrics)} -> {args.output}")

    return run


@subcommand("convert", "turn a released or stock checkpoint into a model directory the Auto classes load")
def build_convert(parser: argparse.ArgumentParser):
    from .data.corpora import CLASSIFIER_LABEL_NAMES
    from .hub.convert import SOURCES
    from .model_families import families

    parser.add_argument("--source", required=True, choices=SOURCES, help="the layout the checkpoint was saved in")
    parser.add_argument(
        "--checkpoint", required=True, help="the .pth/.pth.tar/.safetensors file (a directory for hf-vitmae)"
    )
    parser.add_argument("--output", required=True, help="the model directory to write")
    parser.add_argument(
        "--preset",
        choices=[name for family in families() if family.checkpoint_sources for name in sorted(family.presets)],
        help="model size (default: inferred from the tensor shapes)",
    )
    parser.add_argument(
        "--labels",
        choices=CLASSIFIER_LABEL_NAMES,
        help="the corpus whose labels a classifier head has (default: from the head size)",
    )
    parser.add_argument(
        "--image-size", type=int, help="input resolution of the converted ViT (position tables resampled)"
    )

    def run(args: argparse.Namespace) -> None:
        from .hub.convert import convert_checkpoint

        result = convert_checkpoint(
            args.source,
            args.checkpoint,
            args.output,
            preset=args.preset,
            labels=args.labels,
            image_size=args.image_size,
        )
        for note in result.notes:
            print(f"note: {note}")
        print(f"{type(result.model).__name__} saved to {args.output}")

    return run


@subcommand("export-native", "export a classifier to stock transformers classes (no remote code)")
def build_export_native(parser: argparse.ArgumentParser):
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a cxr-vitmae classifier directory or a Hub repo id")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="where to write the native model")

    def run(args: argparse.Namespace) -> None:
        from .hub.export_native import export_native

        export_native(args.model_dir, args.output_dir)
        print(f"native transformers model saved to {args.output_dir}")

    return run


def metric_summary(metrics: dict) -> str:
    """The headline numbers of a metrics.json, named and rounded to 4 places, with their 95 % CIs."""

    def named(name: str, key: str) -> str:
        interval = metrics.get(f"{key}_ci95")
        bounds = f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
        return f"{name} {metrics[key]:.4f}{bounds}"

    if metrics.get("accuracy") is not None:
        return named("accuracy", "accuracy")
    if metrics.get("mean_auroc") is None:
        return "mean AUROC undefined (no class has both label values)"
    return f"{named('mean AUROC', 'mean_auroc')}, {named('mean AUPRC', 'mean_auprc')}"


def add_model_on_split_arguments(parser: argparse.ArgumentParser, dataset_help: str, output: str) -> None:
    """MODEL_DIR, the corpus split it is run on (`--dataset --data-dir --split`, corpus `--option`s) and the JSON
    `--output`: what `evaluate` and `localize` take."""
    from .data import CORPORA

    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved classifier directory or a Hub repo id")
    parser.add_argument("--dataset", required=True, choices=list(CORPORA), help=dataset_help)
    parser.add_argument(
        "--data-dir", help="the corpus as distributed, or a prepared copy (none for hf: its option path names it)"
    )
    parser.add_argument("--split", default="test", help="default: %(default)s")
    parser.add_argument("--output", default=output, help="default: %(default)s")
    add_corpus_options(parser)


def model_on_split(args: argparse.Namespace) -> dict:
    """The keyword arguments of `evaluate_model` and `localize` that `add_model_on_split_arguments` parsed."""
    return {"model_dir": args.model_dir, "dataset": args.dataset, "data_dir": args.data_dir, "split": args.split,
            **dict(args.option)}  # fmt: skip


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """`--device`: the torch device the model runs on, CUDA when there is one."""
    import torch  # only the commands that take --device need it

    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (default: %(default)s)"
    )


def add_corpus_options(parser: argparse.ArgumentParser) -> None:
    """Repeatable `--option KEY=VALUE`: the keyword options of `load_cxr_dataset`."""
    parser.add_argument(
        "--option", type=corpus_option, action="append", default=[], metavar="KEY=VALUE", help="a corpus option"
    )


def corpus_option(text: str) -> tuple[str, object]:
    """`KEY=VALUE` with VALUE read as YAML, e.g. `views=[PA]`, `validation_fraction=0.2`, `tasks=all`."""
    import yaml

    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


@subcommand(
    "phantoms",
    "write a synthetic chest X-ray corpus in the on-disk format of NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG or COVIDx",
)
def build_phantoms(parser: argparse.ArgumentParser):
    from .data.phantoms import DIFFICULTY, DIFFICULTY_CHOICES, LAYOUT_CORPORA, LAYOUTS, TEST_FRACTION

    parser.add_argument("--output", required=True, help="directory to write the images and the metadata files to")
    parser.add_argument(
        "--num-images",
        type=int,
        required=True,
        help="number of frontal images (a CheXpert or MIMIC study may add a lateral)",
    )
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default: 1024, as NIH)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes byte-identical files (default: 0)")
    parser.add_argument(
        "--difficulty",
        default=DIFFICULTY,
        help=f"{', '.join(DIFFICULTY_CHOICES)} or a number in [0, 1] (default: %(default)s)",
    )
    parser.add_argument(
        "--variation",
        type=float,
        default=1.0,
        help="spread of anatomy and acquisition between images, x the difficulty's (default: %(default)s; real "
        "radiographs vary more than the default phantoms)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=TEST_FRACTION,
        help="share of the images whose patients make the held-out split (NIH's test list, CheXpert's valid, MIMIC's "
        "and COVIDx's test; default: NIH's, %(default).3f); a larger one tightens test confidence intervals",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="nih",
        help="whose on-disk format to write (default: %(default)s); the corpus of that name reads it (nih: "
        f"{LAYOUT_CORPORA['nih']})",
    )

    def run(args: argparse.Namespace) -> None:
        from .data.phantoms import write_phantom_layout

        try:
            difficulty = float(args.difficulty)
        except ValueError:
            difficulty = args.difficulty  # a level name; write_phantom_layout says which names exist
        written = write_phantom_layout(
            args.output,
            args.num_images,
            layout=args.layout,
            size=args.size,
            seed=args.seed,
            difficulty=difficulty,
            variation=args.variation,
            test_fraction=args.test_fraction,
            progress=True,
        )
        print(
            f"{len(written.images)} {args.layout} phantom images written to {written.output_dir} (read them as "
            f"{LAYOUT_CORPORA[args.layout]})"
        )
        for split in written.splits:
            print(f"  {split.name}: {split.images} images, {split.patients} patients ({', '.join(split.listed_in)})")

    return run


@subcommand("prepare", "decode and resize a corpus once into an Arrow copy that loaders and trainers read")
def build_prepare(parser: argparse.ArgumentParser):
    from .data import CORPORA

    parser.add_argument("name", metavar="NAME", choices=list(CORPORA), help=f"one of {', '.join(CORPORA)}")
    parser.add_argument("--data-dir", help="the corpus as distributed (none for hf: its option path names it)")
    parser.add_argument("--output", required=True, help="the prepared directory to write (pass it as data_dir later)")
    parser.add_argument("--size", type=int, default=256, help="short side of the stored images (default: 256)")
    parser.add_argument("--num-proc", type=int, default=None, help="worker processes (default: 1)")
    add_corpus_options(parser)

    def run(args: argparse.Namespace) -> None:
        from .data.prepare import prepare_corpus

        output = prepare_corpus(
            args.name, args.data_dir, args.output, size=args.size, num_proc=args.num_proc, **dict(args.option)
        )
        print(f"prepared {args.name} in {output}")

    return run


@subcommand(
    "gradcam",
    "Grad-CAM overlay PNG of one image (DenseNet: last dense block; timm: last stage; ViT: last LayerNorm)",
    ("output",),
)
def build_gradcam(parser: argparse.ArgumentParser):
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved classifier directory or a Hub repo id")
    parser.add_argument("image", metavar="IMAGE", help="PNG (8/16-bit), JPEG or DICOM file")
    parser.add_argument(
        "--output", required=True, help="the figure to write (PNG): the input and the Grad-CAM overlay, 384+ px panels"
    )
    parser.add_argument("--label", help="the class to explain (default: the most probable one)")
    add_device_option(parser)

    def run(args: argparse.Namespace) -> None:
        from .evaluation.figures import plot_panels
        from .explain.gradcam import explain_image, gradcam_panels
        from .models import load_radiograph
        from .predict import load_classifier

        image = load_radiograph(args.image)
        model, processor = load_classifier(args.model_dir, args.device)
        result = explain_image(model, processor, image, label=args.label)
        panels, title = gradcam_panels(result, model_name(args.model_dir))
        plot_panels(panels, args.output, title=title)
        height, width = result.heatmap.shape
        print(f"{result.label} (p={result.probability:.3f}): Grad-CAM at {width}x{height}, figure -> {args.output}")

    return run


@subcommand("localize", "Grad-CAM localisation of NIH's boxes: pointing game, IoU, AP25/AP50 (JSON)", ("output",))
def build_localize(parser: argparse.ArgumentParser):
    add_model_on_split_arguments(parser, "a corpus with boxes (nih-chestxray14)", output="localization.json")
    parser.add_argument(
        "--tune-fraction", type=float, default=0.5, help="share of patients whose boxes choose the threshold"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split (default: 0)")
    parser.add_argument("--batch-size", type=int, default=16)
    add_device_option(parser)

    def run(args: argparse.Namespace) -> None:
        from .explain.localization import localize

        result = localize(**model_on_split(args), tune_fraction=args.tune_fraction, seed=args.seed,
                          batch_size=args.batch_size, device=args.device)  # fmt: skip
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"{args.dataset} {args.split}: pointing game {result['pointing_game']:.3f}, mean IoU "
            f"{result['mean_iou']:.3f} at {result['threshold']['fraction_of_max']} x max ({result['n_boxes']} boxes; "
            f"{result['tuning']['n_boxes']} chose the threshold) -> {args.output}"
        )

    return run


@subcommand("reconstruct", "MAE reconstruction strip PNG: original / masked / reconstruction / error map", ("output",))
def build_reconstruct(parser: argparse.ArgumentParser):
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="an MAE pre-training directory (with the decoder) or a Hub repo id"
    )
    parser.add_argument("image", metavar="IMAGE", help="PNG (8/16-bit), JPEG or DICOM file")
    parser.add_argument(
        "--output", required=True, help="the figure to write (PNG): one row of 384+ px panels with colour bars"
    )
    parser.add_argument("--mask-ratio", type=float, default=0.9, help="fraction of patches hidden (default: 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masking (default: 0)")
    parser.add_argument(
        "--anomaly-maskings", type=int, default=0, help="K > 0 adds a fifth panel: the anomaly map over K maskings"
    )
    add_device_option(parser)

    def run(args: argparse.Namespace) -> None:
        from .evaluation.figures import plot_panels
        from .explain.reconstruction import load_pretraining_model, reconstruction_panels, reconstruction_views
        from .models import load_radiograph

        image = load_radiograph(args.image)
        model, processor = load_pretraining_model(args.model_dir, args.device)
        views = reconstruction_views(
            model, processor, image, args.mask_ratio, args.seed, anomaly_maskings=args.anomaly_maskings
        )
        panels, title = reconstruction_panels(
            views, model_name(args.model_dir), args.mask_ratio, args.seed, args.anomaly_maskings
        )
        plot_panels(panels, args.output, title=title)
        height, width = views["original"].shape
        print(f"reconstruction at {width}x{height} (mask ratio {args.mask_ratio}), figure -> {args.output}")

    return run


@subcommand(
    "anomaly-eval", "plant nodules into healthy phantoms and score MAE anomaly maps (pointing game, JSON)", ("output",)
)
def build_anomaly_eval(parser: argparse.ArgumentParser):
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="an MAE pre-training directory (with the decoder) or a Hub repo id"
    )
    parser.add_argument("--data-dir", required=True, help="a phantom corpus (cxr-vitmae phantoms)")
    parser.add_argument("--num-images", type=int, default=32, help="healthy images to plant into (default: 32)")
    parser.add_argument("--num-maskings", type=int, default=8, help="random maskings per anomaly map (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seeds images, nodules and maskings (default: 0)")
    parser.add_argument("--split", default="test", help="default: %(default)s")
    parser.add_argument("--mask-ratio", type=float, help="fraction hidden per masking (default: the model's)")
    parser.add_argument(
        "--nodule-scale", type=float, default=1.0, help="multiplies the phantoms' nodule radii (default: 1)"
    )
    parser.add_argument("--output", help="the JSON file to write (default: print it)")
    parser.add_argument("--batch-size", type=int, default=16)
    add_device_option(parser)

    def run(args: argparse.Namespace) -> None:
        from .explain.anomaly import evaluate_planted_nodules
        from .explain.reconstruction import load_pretraining_model

        model, processor = load_pretraining_model(args.model_dir, args.device)
        result = evaluate_planted_nodules(
            model,
            processor,
            args.data_dir,
            num_images=args.num_images,
            num_maskings=args.num_maskings,
            seed=args.seed,
            split=args.split,
            mask_ratio=args.mask_ratio,
            nodule_scale=args.nodule_scale,
            batch_size=args.batch_size,
        )
        text = json.dumps(result, indent=2) + "\n"
        if args.output is None:
            sys.stdout.write(text)
            return
        Path(args.output).write_text(text)
        print(
            f"{result['n_images']} planted nodules: hit rate {result['hit_rate']:.3f} (control "
            f"{result['control_hit_rate']:.3f}, chance {result['chance_hit_rate']:.3f}) -> {args.output}"
        )

    return run


@subcommand("push", "upload a model directory with its model card, metrics and figures to the Hugging Face Hub")
def build_push(parser: argparse.ArgumentParser):
    from .hub.model_card import DEFAULT_LICENSE

    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved model directory (recipe output_dir)")
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the Hub model repository")
    parser.add_argument(
        "--private", action="store_true", help="create the repository as private (an existing one keeps its setting)"
    )
    parser.add_argument(
        "--dry-run", metavar="OUT_DIR", help="write exactly what would be uploaded to OUT_DIR (new or empty) instead"
    )
    parser.add_argument("--license", default=DEFAULT_LICENSE, help="the card's license id (default: %(default)s)")
    parser.add_argument("--base-model", metavar="REPO_ID", help="the card's base_model (default: from the recipe)")

    def run(args: argparse.Namespace) -> None:
        from .hub.push import push_to_hub, upload_set, write_upload_set

        options = {"license": args.license, "base_model": args.base_model}
        if args.dry_run:
            files = upload_set(args.model_dir, args.repo_id, **options)
            write_upload_set(files, args.dry_run)
            print(f"dry run: the {len(files)} files {args.repo_id} would receive are in {args.dry_run}")
            return
        commit = push_to_hub(args.model_dir, args.repo_id, private=args.private, **options)
        print(f"pushed {args.model_dir} to {commit.commit_url}")

    return run


# Set to 1 (or pass --debug) to see the full traceback of an error the CLI would print as one line.
DEBUG_ENVIRONMENT = "CXR_VITMAE_DEBUG"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or, with `only`, one whose subcommands other than `only` are left without their
    arguments: a builder may import what its command needs (a corpus registry, the phantom generator), and `main`
    parses one command, so it builds that one alone (`cxr-vitmae --help` builds none)."""
    parser = argparse.ArgumentParser(
        prog="cxr-vitmae", description="Masked-autoencoder ViTs and DenseNets for chest X-ray classification."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, build, output_files) in SUBCOMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        command.set_defaults(run=build(command), output_files=output_files)
        command.add_argument(
            "--debug", action="store_true", help=f"show the traceback of any error (also {DEBUG_ENVIRONMENT}=1)"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The top-level parser takes no option with a value, so the first word that is no option names the command.
    named = next((word for word in argv if not word.startswith("-")), "")
    args = build_parser(only=named).parse_args(argv)
    from transformers.utils import logging as transformers_logging

    # Weight-loading and split-building progress bars would interleave with the command's own output and its
    # one-line errors. datasets reads its switch at import, which commands without a corpus never pay for (a second).
    transformers_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    else:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    debug = args.debug or os.environ.get(DEBUG_ENVIRONMENT, "") not in ("", "0")
    try:
        for name in args.output_files:
            check_output_file(getattr(args, name))
        args.run(args)
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"cxr-vitmae {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
