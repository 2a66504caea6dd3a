"""`cxr-vitmae predict --output` at archive scale: end-to-end images/s against the bare model forward, and peak memory
at 1,000 against 10,000 images.

    python benchmarks/predict_throughput.py                 # 256 images, 3 alternating repetitions; 1,000 / 10,000
    python benchmarks/predict_throughput.py --quick         # 64 images, 1 repetition; 200 / 2,000

Images: `--num-images` phantom radiographs (`cxr-vitmae phantoms`' generator, NIH layout, 8-bit PNG) at `--size` px.

(a) Throughput. A randomly initialised `ViTMAEForChestXray` of `--preset` (default vit-small, 224 px: with a tiny
model decoding dominates, and a realistic model makes the forward the share of the work it has in practice) saved as
a model directory. Each repetition runs, in turn:
- the real command, `cxr-vitmae predict MODEL_DIR IMAGES_DIR --output scores.csv --batch-size B` in a process of
  its own, once per `--paths` entry (`default`: its default loader workers; `inline`: `--num-workers 0`). Its
  images/s is read off the output file, which grows batch by batch: rows written after the first batch, over the time
  from the first batch on disk to the last (start-up, model loading and the first batch are left out; the command's
  wall time is reported beside it);
- the bare forward: the same model and batch size in a fresh process with the same (default) torch threads, on the
  same images decoded and processed beforehand (`load_radiograph` + the model's processor, stacked into the same
  batches), `model(pixel_values=batch)` under `torch.inference_mode`, one warm-up batch left out.
Ratio: end-to-end / bare per repetition, then the median.

(b) Memory. A tiny classifier (vit-tiny, 1 layer, 64 px: the loader, not the model, is what must not grow), the same
command with the default workers on N and 10·N images; the images are symlinks to the phantoms above (10,000
distinct paths, `--num-images` distinct files), listed in a .txt file. Peak RSS: `os.wait4`'s `ru_maxrss` of the
command, the largest single process among the command and its loader workers.

Writes benchmarks/results/predict_throughput_cpu.json and prints the tables; `--markdown JSON` prints the
RESULTS.md section of a JSON this script wrote.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import machine_description, print_table, write_json

from cxr_vitmae import CXRViTMAEConfig, ViTMAEForChestXray
from cxr_vitmae.data.phantoms import generate_phantoms

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
PATHS = {"default": [], "inline": ["--num-workers", "0"]}
TARGET_RATIO = 0.8
TARGET_MEMORY_RATIO = 1.25


def save_classifier(directory: Path, preset: str, **overrides) -> Path:
    if not (directory / "config.json").is_file():
        torch.manual_seed(0)
        ViTMAEForChestXray(CXRViTMAEConfig.from_preset(preset, **overrides)).eval().save_pretrained(directory)
    return directory


def phantom_images(directory: Path, num_images: int, size: int) -> list[Path]:
    if not (directory / "images").is_dir():
        generate_phantoms(directory, num_images, size=size, seed=0)
    return sorted((directory / "images").glob("*.png"))


def run_command(argv: list[str], output: Path, log: Path, poll_s: float = 0.02) -> dict:
    """Run `argv`; sample the output file's complete lines while it runs (`poll_s` apart); return the wall time, the
    steady images/s (rows after the first batch over the time from the first batch to the last) and the peak RSS."""
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(log, "w") as stderr:
        process = subprocess.Popen(argv, stdout=stderr, stderr=stderr)
    samples = []
    while True:
        # wait4 rather than Popen.poll: it reaps the child with its resource usage.
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        rows = output.read_bytes().count(b"\n") - 1 if output.exists() else 0  # less the header line
        if not samples or rows != samples[-1][1]:
            samples.append((time.perf_counter(), rows))
        if pid:
            break
        time.sleep(poll_s)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{log.read_text()[-4000:]}")
    written = [(moment, rows) for moment, rows in samples if rows > 0]
    (first_time, first_rows), (last_time, last_rows) = written[0], written[-1]
    steady = (last_rows - first_rows) / (last_time - first_time) if last_time > first_time else float("nan")
    return {
        "wall_s": wall,
        "first_batch_s": first_time - start,
        "steady_images_per_s": steady,
        "rows": last_rows,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
    }


def bare_forward(model_dir: Path, images_list: Path, batch_size: int) -> float:
    """Images/s of the model alone on pre-processed batches of the listed images (see the module docstring)."""
    from cxr_vitmae.models import load_radiograph
    from cxr_vitmae.models.pipeline_cxr import processor_input
    from cxr_vitmae.predict import load_classifier

    model, processor = load_classifier(model_dir)
    paths = images_list.read_text().split()
    pixels = torch.stack(
        [
            processor(processor_input(processor, load_radiograph(p)), return_tensors="pt")["pixel_values"][0]
            for p in paths
        ]
    )
    batches = list(pixels.split(batch_size))
    with torch.inference_mode():
        model(pixel_values=batches[0])  # warm-up, as predict's first batch is left out
        start = time.perf_counter()
        for batch in batches[1:]:
            model(pixel_values=batch)
        seconds = time.perf_counter() - start
    return sum(len(batch) for batch in batches[1:]) / seconds


def throughput(workdir: Path, images: list[Path], args) -> dict:
    model_dir = save_classifier(workdir / f"model-{args.preset}", args.preset)
    listed = workdir / "throughput_images.txt"
    listed.write_text("".join(f"{path}\n" for path in images))
    repetitions = []
    for repeat in range(args.repeats):
        record = {}
        for name in args.paths.split(","):
            argv = [str(BIN / "cxr-vitmae"), "predict", str(model_dir), str(listed), "--output",
                    str(workdir / "scores.csv"), "--batch-size", str(args.batch_size), *PATHS[name]]  # fmt: skip
            record[name] = run_command(argv, workdir / "scores.csv", workdir / "predict.log")
        command = [sys.executable, str(Path(__file__).resolve()), "--bare-forward", str(model_dir), str(listed),
                   "--batch-size", str(args.batch_size)]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
        if result.returncode != 0:
            raise SystemExit(f"bare forward failed:\n{result.stderr[-4000:]}")
        record["bare_images_per_s"] = float(result.stdout.strip().splitlines()[-1])
        for name in args.paths.split(","):
            record[name]["ratio"] = record[name]["steady_images_per_s"] / record["bare_images_per_s"]
        repetitions.append(record)
        print(f"repetition {repeat + 1}: " + json.dumps(record))
    median = {"bare_images_per_s": statistics.median(r["bare_images_per_s"] for r in repetitions)}
    for name in args.paths.split(","):
        median[name] = {key: statistics.median(r[name][key] for r in repetitions) for key in repetitions[0][name]}
    return {"repetitions": repetitions, "median": median}


def memory(workdir: Path, images: list[Path], sizes: list[int], args) -> list[dict]:
    model_dir = save_classifier(workdir / "model-tiny", "vit-tiny", image_size=64, num_hidden_layers=1)
    links = workdir / "links"
    links.mkdir(exist_ok=True)
    results = []
    for count in sizes:
        paths = []
        for index in range(count):
            link = links / f"image_{index:05d}.png"
            if not link.is_symlink():
                link.symlink_to(images[index % len(images)])
            paths.append(link)
        listed = workdir / f"memory_{count}.txt"
        listed.write_text("".join(f"{path}\n" for path in paths))
        argv = [str(BIN / "cxr-vitmae"), "predict", str(model_dir), str(listed), "--output",
                str(workdir / "memory.csv"), "--batch-size", str(args.batch_size)]  # fmt: skip
        run = run_command(argv, workdir / "memory.csv", workdir / "memory.log", poll_s=0.2)
        results.append({"images": count, **run})
        print(f"memory, {count} images: " + json.dumps(run))
    return results


def markdown(results: dict) -> str:
    """The RESULTS.md section for a JSON this script wrote."""
    settings = results["settings"]
    median = results["throughput"]["median"]
    lines = [
        "## Batch inference: `cxr-vitmae predict --output` against the bare forward",
        "",
        f"- Date: {results['date']}",
        f"- Machine: {results['machine']}; load average at the end "
        + ", ".join(f"{value:.1f}" for value in results["load_average"]),
        f"- Command: `{results['command']}` (JSON in benchmarks/results/{Path(results['json']).name})",
        f"- Throughput: {settings['num_images']} phantoms at {settings['size']} px (8-bit PNG), a random "
        f"{settings['preset']} classifier at 224 px, batch {settings['batch_size']}, CSV output; images/s of the "
        "command from its output file after the first batch; bare forward in a fresh process with the same torch "
        f"threads on the same batches decoded beforehand; median of {settings['repeats']} alternating repetitions "
        "(ratio: median of the per-repetition ratios)",
        "",
        "| loader | end-to-end img/s | bare forward img/s | ratio | ≥ 0.8 | first batch on disk s | command wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in settings["paths"]:
        row = median[name]
        lines.append(
            f"| {name} | {row['steady_images_per_s']:.1f} | {median['bare_images_per_s']:.1f} | {row['ratio']:.3f} | "
            f"{'yes' if row['ratio'] >= TARGET_RATIO else 'NO'} | {row['first_batch_s']:.1f} | {row['wall_s']:.1f} |"
        )
    repetitions = results["throughput"]["repetitions"]
    lines += [
        "",
        "Per repetition: "
        + "; ".join(
            f"{name} " + ", ".join(f"{r[name]['ratio']:.3f}" for r in repetitions) for name in settings["paths"]
        )
        + " (bare forward "
        + ", ".join(f"{r['bare_images_per_s']:.1f}" for r in repetitions)
        + " img/s).",
    ]
    small, large = results["memory"][0], results["memory"][-1]
    lines += [
        "",
        f"Peak RSS (`ru_maxrss` of the command, default loader workers, a 1-layer vit-tiny at 64 px, batch "
        f"{settings['batch_size']}; the images are {large['images']:,} symlinks to the {settings['num_images']} "
        "phantoms, listed in a .txt file):",
        "",
        "| images | peak RSS MiB | command wall s |",
        "|---|---|---|",
        *(f"| {run['images']:,} | {run['peak_rss_mib']:.0f} | {run['wall_s']:.1f} |" for run in results["memory"]),
        "",
        f"Ratio {large['images']:,} / {small['images']:,} images: {results['memory_ratio']:.3f} (target ≤ "
        f"{TARGET_MEMORY_RATIO}: {'met' if results['memory_ratio'] <= TARGET_MEMORY_RATIO else 'missed'}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 images, 1 repetition, memory at 200 / 2,000")
    parser.add_argument("--num-images", type=int, default=None, help="distinct phantoms (default 256; quick 64)")
    parser.add_argument("--size", type=int, default=512, help="phantom side in px (default: 512)")
    parser.add_argument("--preset", default="vit-small", help="the throughput model's preset (default: vit-small)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=None, help="default 3; quick 1")
    parser.add_argument(
        "--paths", default=None, help="loader settings to time (default: default,inline; quick: default)"
    )
    parser.add_argument("--memory-images", type=int, default=None, help="the smaller count (default 1000; quick 200)")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps phantoms and models between runs")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/predict_throughput_cpu.json")
    parser.add_argument("--markdown", type=Path, default=None, help="print the RESULTS.md section of this JSON, exit")
    parser.add_argument("--bare-forward", nargs=2, metavar=("MODEL_DIR", "LIST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    if args.bare_forward:
        print(bare_forward(Path(args.bare_forward[0]), Path(args.bare_forward[1]), args.batch_size))
        return
    args.num_images = args.num_images or (64 if args.quick else 256)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.paths = args.paths or ("default" if args.quick else "default,inline")
    small = args.memory_images or (200 if args.quick else 1000)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="predict-throughput-"))
    workdir.mkdir(parents=True, exist_ok=True)
    images = phantom_images(workdir / f"phantoms-{args.num_images}-{args.size}", args.num_images, args.size)
    results = {
        "benchmark": "predict_throughput",
        "machine": machine_description(torch.device("cpu")),
        "command": "python benchmarks/predict_throughput.py " + " ".join(sys.argv[1:]),
        "settings": {
            "num_images": args.num_images,
            "size": args.size,
            "preset": args.preset,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "paths": args.paths.split(","),
        },
        "throughput": throughput(workdir, images, args),
        "memory": memory(workdir, images, [small, 10 * small], args),
    }
    results["memory_ratio"] = results["memory"][-1]["peak_rss_mib"] / results["memory"][0]["peak_rss_mib"]
    results["load_average"] = list(os.getloadavg())
    results["json"] = args.output or str(HERE / "results" / "predict_throughput_cpu.json")

    median = results["throughput"]["median"]
    print_table(
        f"predict --output, {args.preset} at 224 px, batch {args.batch_size} — {results['machine']}",
        ["loader", "end-to-end img/s", "bare forward img/s", "ratio", "first batch s", "wall s"],
        [[name, f"{median[name]['steady_images_per_s']:.1f}", f"{median['bare_images_per_s']:.1f}",
          f"{median[name]['ratio']:.3f}", f"{median[name]['first_batch_s']:.1f}", f"{median[name]['wall_s']:.1f}"]
         for name in results["settings"]["paths"]],
    )  # fmt: skip
    print_table(
        "peak RSS of predict --output",
        ["images", "peak RSS MiB", "wall s"],
        [[f"{run['images']:,}", f"{run['peak_rss_mib']:.0f}", f"{run['wall_s']:.1f}"] for run in results["memory"]],
    )
    print(f"memory ratio {results['memory_ratio']:.3f}")
    write_json(results["json"], results)


if __name__ == "__main__":
    main()
