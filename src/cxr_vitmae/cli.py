"""The `cxr-vitmae` command line: one entry point, one subcommand per job."""

import argparse
import json
import sys

import torch

SUBCOMMANDS = {}


def subcommand(name: str, help_text: str):
    """Register `function(parser)` as the argument builder of subcommand `name`; it returns the runner."""

    def decorate(build):
        SUBCOMMANDS[name] = (help_text, build)
        return build

    return decorate


@subcommand("predict", "print JSON label probabilities for one or more images")
def build_predict(parser: argparse.ArgumentParser):
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved model directory (save_pretrained output)")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="PNG (8/16-bit), JPEG or DICOM files")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (default: %(default)s)"
    )

    def run(args: argparse.Namespace) -> None:
        from .predict import decode_images, load_classifier, predict_images

        images = decode_images(args.images)
        model, processor = load_classifier(args.model_dir, args.device)
        results = predict_images(model, processor, images, batch_size=args.batch_size)
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")

    return run


@subcommand("evaluate", "metrics.json of a saved classifier on a corpus split (AUROC/AUPRC, bootstrap CIs)")
def build_evaluate(parser: argparse.ArgumentParser):
    from .data import CORPORA

    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved classifier directory")
    parser.add_argument("--dataset", required=True, choices=list(CORPORA), help="the corpus name")
    parser.add_argument("--data-dir", required=True, help="the corpus as distributed, or a prepared copy")
    parser.add_argument("--split", default="test", help="default: %(default)s")
    parser.add_argument("--output", default="metrics.json", help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="patient-level bootstrap resamples")
    add_corpus_options(parser)

    def run(args: argparse.Namespace) -> None:
        from pathlib import Path

        from .evaluation.evaluate_model import evaluate_model

        metrics = evaluate_model(
            args.model_dir,
            args.dataset,
            args.data_dir,
            split=args.split,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            n_bootstrap=args.n_bootstrap,
            **dict(args.option),
        )
        Path(args.output).write_text(json.dumps(metrics, indent=2) + "\n")
        summary = metrics["accuracy"] if metrics["accuracy"] is not None else metrics["mean_auroc"]
        print(f"{args.dataset} {args.split}: {summary} ({metrics['n_images']} images) -> {args.output}")

    return run


@subcommand("convert", "turn a released or stock checkpoint into a model directory the Auto classes load")
def build_convert(parser: argparse.ArgumentParser):
    from .hub.convert import SOURCES
    from .models.configuration_cxr_densenet import CXR_DENSENET_PRESETS
    from .models.configuration_cxr_vitmae import VIT_PRESETS
    from .models.conversion_utils import LABEL_SETS

    parser.add_argument("--source", required=True, choices=SOURCES, help="the layout the checkpoint was saved in")
    parser.add_argument(
        "--checkpoint", required=True, help="the .pth/.pth.tar/.safetensors file (a directory for hf-vitmae)"
    )
    parser.add_argument("--output", required=True, help="the model directory to write")
    parser.add_argument(
        "--preset",
        choices=sorted(VIT_PRESETS) + sorted(CXR_DENSENET_PRESETS),
        help="model size (default: inferred from the tensor shapes)",
    )
    parser.add_argument(
        "--labels", choices=sorted(LABEL_SETS), help="label set of a classifier head (default: from the head size)"
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
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a cxr-vitmae classifier directory")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="where to write the native model")

    def run(args: argparse.Namespace) -> None:
        from .hub.export_native import export_native

        export_native(args.model_dir, args.output_dir)
        print(f"native transformers model saved to {args.output_dir}")

    return run


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


@subcommand("phantoms", "write a synthetic chest X-ray corpus in NIH ChestX-ray14's on-disk format")
def build_phantoms(parser: argparse.ArgumentParser):
    from .data.phantoms import DIFFICULTY, DIFFICULTY_CHOICES

    parser.add_argument("--output", required=True, help="directory to write images/ and the NIH metadata files to")
    parser.add_argument("--num-images", type=int, required=True, help="number of images")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default: 1024, as NIH)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes byte-identical files (default: 0)")
    parser.add_argument(
        "--difficulty",
        default=DIFFICULTY,
        help=f"{', '.join(DIFFICULTY_CHOICES)} or a number in [0, 1] (default: %(default)s)",
    )

    def run(args: argparse.Namespace) -> None:
        from .data.phantoms import generate_phantoms

        try:
            difficulty = float(args.difficulty)
        except ValueError:
            difficulty = args.difficulty  # a level name; generate_phantoms says which names exist
        corpus = generate_phantoms(
            args.output, args.num_images, size=args.size, seed=args.seed, difficulty=difficulty, progress=True
        )
        print(
            f"{len(corpus.images)} phantoms ({len(corpus.train_val_files)} train_val, {len(corpus.test_files)} test) "
            f"written to {corpus.output_dir}"
        )

    return run


@subcommand("prepare", "decode and resize a corpus once into an Arrow copy that loaders and trainers read")
def build_prepare(parser: argparse.ArgumentParser):
    from .data import CORPORA

    parser.add_argument("name", metavar="NAME", choices=list(CORPORA), help=f"one of {', '.join(CORPORA)}")
    parser.add_argument("--data-dir", required=True, help="the corpus as distributed")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-vitmae", description="Masked-autoencoder ViTs and DenseNets for chest X-ray classification."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, build) in SUBCOMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(run=build(command))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as transformers_logging

    # Weight-loading progress bars would interleave with the command's own output and its one-line errors.
    transformers_logging.disable_progress_bar()
    try:
        args.run(args)
    except (OSError, ValueError) as error:
        # Bad input (missing/unreadable file, wrong format) is the user's to fix: one line, no traceback.
        print(f"cxr-vitmae {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
