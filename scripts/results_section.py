"""What the scripts share: the machine's description, a positive-count flag type, and replacing a generated section of
the results page, docs/results.md (the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`), so that the
numbers it shows are the ones a script wrote (`demo.py`, `reproduce.py`, `sweep_mae.py` and `probe_readouts.py`
with `--update-results`).
README.md links to that page and carries no measurements itself."""

import argparse
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"


def update_results_section(name: str, body: str, page: Path = RESULTS) -> None:
    """Put `body` between the section's markers; SystemExit naming the markers when the page lacks them."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = page.read_text()
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise SystemExit(f"{page} needs exactly one {start} ... {end} section to update")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    page.write_text(f"{head}{start}\n{body.strip()}\n{end}{tail}")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def machine() -> str:
    """The CPU's model name (Linux), its core count and, where there is one, the GPU."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}"


def add_update_results_flag(parser, help_text: str) -> None:
    """`--update-results`: write the script's section of docs/results.md. `--update-readme`, its name before the
    results moved out of README, stays accepted: the recorded runs on the results page were made with it."""
    parser.add_argument(
        "--update-results", "--update-readme", dest="update_results", action="store_true", help=help_text
    )
