"""Shared timing harness of the model benchmarks: alternating repetitions, medians, ratios, a table and JSON.

Every benchmark times ours against an anchor (stock transformers or timm) in the same process, alternating the two
repetition by repetition so that a slow phase of a shared machine hits both, and reports the median throughput of
each and the ratio ours / anchor.
"""

import json
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import torch


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for "bf16", nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return nullcontext()
    raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")


def time_alternating(
    runners: dict[str, Callable[[], None]],
    *,
    items_per_call: int,
    calls_per_repeat: int,
    repeats: int,
    warmup: int,
    device: torch.device,
) -> dict[str, dict]:
    """Median items/s of each runner over `repeats` alternating repetitions (after `warmup` calls of each)."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls_per_repeat):
                run()
            synchronize(device)
            samples[name].append(items_per_call * calls_per_repeat / (time.perf_counter() - start))
    return {
        name: {"median_items_per_s": statistics.median(values), "samples": values} for name, values in samples.items()
    }


def matmul_peak_flops(
    device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 10, blocks: int = 5
) -> float:
    """Measured FLOP/s of a square matrix product in `dtype`, the best of `blocks` timed blocks of `repeats` products:
    the roofline MFU is quoted against. The best, not the median, because a peak is what the hardware can do, and
    on a shared machine a single block can land in a slow phase (one did here: an MFU above 100 %)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(blocks):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=True)))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def write_json(path: str | Path, payload: dict) -> None:
    payload = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **payload}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {path}")
