"""Data-pipeline throughput: the raw corpus (1024x1024 8-bit PNGs decoded, then transformed) against the prepared
Arrow cache (`cxr-vitmae prepare`, short side 256, then the same transform), for the pre-training, fine-tuning
(RandAugment) and evaluation transforms, through a torch DataLoader with 2 workers, over the two datasets a user
meets: `with_transform(make_batch_transform(...))` and the recipes' `TransformedCorpus`. Target: prepared >= 10x raw.

    python benchmarks/data_pipeline.py                    # 256 phantoms, batch 64, 7 alternating repetitions
    python benchmarks/data_pipeline.py --num-images 128 --batch-size 16 --repeats 3

The images are `cxr-vitmae phantoms` at 1024 px when `cxr_vitmae.data.phantoms` is importable, else synthetic
radiograph-like PNGs written here in NIH's layout (the output says which). Raw and prepared repetitions alternate so
that a slow phase of a shared machine hits both; medians are reported. Also measured: mean ms per image of each
transform on one core in this process, from a 256x256 uint8 array and from a 1024x1024 PNG file.

Writes benchmarks/results/data_pipeline_cpu.json and the "Data pipeline" section of benchmarks/RESULTS.md.
"""

import argparse
import importlib.util
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy as np
import torch
from harness import print_table, write_json
from PIL import Image

from cxr_vitmae.data import load_cxr_dataset
from cxr_vitmae.data.prepare import STORAGE, prepare_corpus
from cxr_vitmae.data.transforms import (
    collate_radiographs,
    evaluation_transform,
    finetuning_transform,
    make_batch_transform,
    pretraining_transform,
)
from cxr_vitmae.training.data import TransformedCorpus

HERE = Path(__file__).parent
TRANSFORMS = {
    "pre-training": pretraining_transform,
    "fine-tuning (RandAugment)": finetuning_transform,
    "evaluation": evaluation_transform,
}
TARGET = 10.0
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)


def cpu_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {os.cpu_count()} cores"


def write_synthetic_corpus(root: Path, num_images: int, size: int = 1024) -> None:
    """Radiograph-like 8-bit PNGs (smooth anatomy-scale structure, rib-like bands, quantum noise) in NIH's layout,
    one image per patient, the last tenth of the patients as the test list."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    lines, names = [NIH_HEADER], []
    for index in range(num_images):
        coarse = Image.fromarray(rng.random((8, 8)).astype(np.float32), "F").resize((size, size), Image.BICUBIC)
        body = 0.35 + 0.3 * np.asarray(coarse) + 0.15 * np.exp(-((x - 0.5) ** 2) / 0.02)
        ribs = 0.05 * np.sin(40 * y + 8 * np.abs(x - 0.5) + rng.uniform(0, 6))
        pixels = np.clip(body + ribs + rng.normal(0, 0.012, (size, size)), 0, 1)
        name = f"{index + 1:08d}_000.png"
        Image.fromarray((pixels * 255).astype(np.uint8), "L").save(root / "images" / name)
        lines.append(f"{name},No Finding,0,{index + 1},50,M,PA,{size},{size},0.143,0.143,")
        names.append(name)
    test_count = max(1, num_images // 10)
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(names[:-test_count]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[-test_count:]) + "\n")


def make_corpus(root: Path, num_images: int) -> str:
    if importlib.util.find_spec("cxr_vitmae.data.phantoms") is not None:
        from cxr_vitmae.data.phantoms import generate_phantoms

        generate_phantoms(root, num_images, size=1024, seed=0)
        return "cxr-vitmae phantoms, 1024x1024 8-bit PNG"
    write_synthetic_corpus(root, num_images)
    return "synthetic radiograph-like 1024x1024 8-bit PNGs (cxr_vitmae.data.phantoms not importable)"


def all_splits(dataset_dict: datasets.DatasetDict) -> datasets.Dataset:
    return datasets.concatenate_datasets([dataset_dict[split] for split in dataset_dict])


def loader_pass(loader: torch.utils.data.DataLoader) -> int:
    count = 0
    for batch in loader:
        count += len(batch["pixel_values"])
    return count


def with_transform_loader(dataset, transform, *, workers, batch_size) -> torch.utils.data.DataLoader:
    """What a `datasets` user writes: `with_transform(make_batch_transform(...))` and our collate."""
    return torch.utils.data.DataLoader(
        dataset.with_transform(make_batch_transform(transform)),
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collate_radiographs,
    )


def recipes_loader(dataset, transform, *, workers, batch_size) -> torch.utils.data.DataLoader:
    """The recipes' dataset (per-example seeding for exact resume), with workers kept between passes as within one
    of the recipes' epochs."""
    return torch.utils.data.DataLoader(
        TransformedCorpus(dataset, transform, seed=0),
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collate_radiographs,
    )


LOADERS = {"with_transform": with_transform_loader, "recipes' TransformedCorpus": recipes_loader}


def time_pipelines(raw, prepared, *, workers, batch_size, repeats, prepared_passes) -> dict[str, dict[str, dict]]:
    """{loader: {transform: medians and samples}}."""
    # The prepared set repeated, so that one timed pass over it lasts about as long as one over the raw set and the
    # workers' start-of-pass bubble weighs the same in both.
    prepared = datasets.concatenate_datasets([prepared] * prepared_passes)
    results = {loader_name: {} for loader_name in LOADERS}
    for name, factory in TRANSFORMS.items():
        transform = factory()
        loaders = {
            (loader_name, path): make(dataset, transform, workers=workers, batch_size=batch_size)
            for loader_name, make in LOADERS.items()
            for path, dataset in (("raw", raw), ("prepared", prepared))
        }
        for loader in loaders.values():  # starts the workers and warms their caches
            loader_pass(loader)
        samples = {key: [] for key in loaders}
        for _ in range(repeats):
            for key, loader in loaders.items():
                start = time.perf_counter()
                images = loader_pass(loader)
                samples[key].append(images / (time.perf_counter() - start))
        for loader_name in LOADERS:
            raw_samples, prepared_samples = samples[(loader_name, "raw")], samples[(loader_name, "prepared")]
            raw_median, prepared_median = statistics.median(raw_samples), statistics.median(prepared_samples)
            results[loader_name][name] = {
                "raw_images_per_s": raw_median,
                "prepared_images_per_s": prepared_median,
                "ratio": prepared_median / raw_median,
                # Each repetition's raw and prepared passes run back to back, so their ratio drifts less with the
                # load of a shared machine than the ratio of the medians does.
                "paired_ratio_median": statistics.median(
                    fast / slow for slow, fast in zip(raw_samples, prepared_samples, strict=True)
                ),
                "raw_samples": raw_samples,
                "prepared_samples": prepared_samples,
            }
            print(f"  {name}, {loader_name}: raw {raw_median:.1f}/s, prepared {prepared_median:.1f}/s", flush=True)
        del loaders
    return results


def time_transforms_one_core(png_path: Path, calls: int) -> dict[str, dict[str, float]]:
    """Mean ms per call over `calls` calls, in this process with one torch thread. The mean, because it is what a
    throughput pays: RandAugment's costly geometric operations are drawn for about a third of the images, which a
    median would hide."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    small = np.asarray(Image.open(png_path).convert("L").resize((256, 256), Image.BICUBIC))
    try:
        results = {}
        for name, factory in TRANSFORMS.items():
            transform = factory()
            results[name] = {}
            for source, image in (("256x256 array", small), ("1024x1024 PNG", str(png_path))):
                transform(image)
                times = []
                for _ in range(calls):
                    start = time.perf_counter()
                    transform(image)
                    times.append((time.perf_counter() - start) * 1e3)
                results[name][source] = statistics.fmean(times)
        return results
    finally:
        torch.set_num_threads(threads)


def command_arguments() -> list[str]:
    """sys.argv without --note and its text, which RESULTS.md records on its own line."""
    arguments, skip = [], False
    for argument in sys.argv[1:]:
        if skip:
            skip = False
        elif argument == "--note":
            skip = True
        elif not argument.startswith("--note="):
            arguments.append(argument)
    return arguments


def table_rows(pipelines: dict[str, dict[str, dict]], times: str) -> list[list[str]]:
    """One row per transform and loader, transforms together."""
    return [
        [
            name,
            loader_name,
            f"{r['raw_images_per_s']:.1f}",
            f"{r['prepared_images_per_s']:.1f}",
            f"{r['ratio']:.1f}{times}",
            f"{r['paired_ratio_median']:.1f}{times}",
            "yes" if r["ratio"] >= TARGET else "NO",
        ]
        for name in TRANSFORMS
        for loader_name, r in ((loader_name, pipelines[loader_name][name]) for loader_name in LOADERS)
    ]


def results_section(payload: dict) -> str:
    lines = [
        "## Data pipeline",
        "",
        f"- Date: {payload['date']}",
        f"- Machine: {payload['machine']}; 1-minute load average {payload['load_average_1min']['start']:.1f} at "
        f"the start, {payload['load_average_1min']['end']:.1f} at the end",
        f"- Command: `{payload['command']}`",
        f"- Images: {payload['num_images']} × {payload['images']}; prepared cache: short side 256, "
        f"{payload['prepared_storage']}",
        f"- DataLoader: {payload['workers']} workers, batch size {payload['batch_size']}, "
        "`collate_fn=collate_radiographs`, over `with_transform(make_batch_transform(...))` (a `datasets` user's "
        "loader) and over the recipes' `TransformedCorpus`; median of "
        f"{payload['repeats']} alternating repetitions, each one pass over the raw images and one over the "
        f"prepared ones repeated {payload['prepared_passes']} times",
    ]
    if payload.get("note"):
        lines.append(f"- Note: {payload['note']}")
    lines += [
        "",
        f"| transform | loader | raw (1024² PNG) images/s | prepared (256²) images/s | prepared / raw | "
        f"median of paired ratios | ≥ {TARGET:g}× |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in table_rows(payload["pipelines"], times="×")]
    lines += ["", "Transform alone, one core, ms per image (mean):", "", "| transform | 256² array | 1024² PNG |"]
    lines.append("|---|---|---|")
    for name, row in payload["one_core_ms"].items():
        lines.append(f"| {name} | {row['256x256 array']:.2f} | {row['1024x1024 PNG']:.2f} |")
    return "\n".join(lines) + "\n"


def update_results(path: Path, section: str) -> None:
    """Replace the "## Data pipeline" section of RESULTS.md (other sections belong to other benchmarks)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find("## Data pipeline")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("\n" + text[end + 1 :] if end >= 0 else "")
    path.write_text(text)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="the demo recipes' per-device batch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--prepared-passes", type=int, default=8, help="the prepared set is repeated this often per timed pass"
    )
    parser.add_argument("--one-core-calls", type=int, default=200)
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the corpus and cache here (default: temp)")
    parser.add_argument("--note", default="", help="recorded in RESULTS.md, e.g. that the machine was shared")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "data_pipeline_cpu.json")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    datasets.disable_progress_bars()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cxr-data-pipeline-") as temporary:
        work = args.work_dir or Path(temporary)
        corpus, prepared_dir = work / "corpus", work / "prepared"
        described = work / "corpus-source.txt"  # beside the corpus: a file inside would change its fingerprint
        if not (corpus / "Data_Entry_2017.csv").is_file():
            print(f"writing {args.num_images} images to {corpus} ...", flush=True)
            described.write_text(make_corpus(corpus, args.num_images))
        images = described.read_text() if described.is_file() else "a corpus found in --work-dir"
        print("preparing the Arrow cache ...", flush=True)
        prepare_corpus(
            "nih-chestxray14", corpus, prepared_dir, size=256, num_proc=args.workers, cache_dir=work / "hf-cache"
        )
        raw = all_splits(load_cxr_dataset("nih-chestxray14", corpus, cache_dir=work / "hf-cache"))
        prepared = all_splits(load_cxr_dataset("nih-chestxray14", prepared_dir))
        print(f"timing {len(raw)} images per pass ...", flush=True)
        pipelines = time_pipelines(
            raw,
            prepared,
            workers=args.workers,
            batch_size=args.batch_size,
            repeats=args.repeats,
            prepared_passes=args.prepared_passes,
        )
        one_core = time_transforms_one_core(
            Path(raw.cast_column("image", datasets.Image(decode=False))[0]["image"]["path"]), args.one_core_calls
        )

    payload = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": cpu_description(),
        "command": "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *command_arguments()]),
        "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "images": images,
        "num_images": len(raw),
        "prepared_storage": STORAGE,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "prepared_passes": args.prepared_passes,
        "note": args.note,
        "pipelines": pipelines,
        "one_core_ms": one_core,
    }
    print(f"\nimages: {images}; machine: {payload['machine']}")
    print_table(
        f"DataLoader, {args.workers} workers, images/s (median of {args.repeats})",
        ["transform", "loader", "raw 1024² PNG", "prepared 256²", "prepared/raw", "paired", f">= {TARGET:g}x"],
        table_rows(pipelines, times="x"),
    )
    print_table(
        "transform alone, one core, ms/image",
        ["transform", "256² array", "1024² PNG"],
        [[name, f"{r['256x256 array']:.2f}", f"{r['1024x1024 PNG']:.2f}"] for name, r in one_core.items()],
    )
    write_json(args.output, {k: v for k, v in payload.items() if k != "date"})
    update_results(args.results, results_section(payload))


if __name__ == "__main__":
    main()
