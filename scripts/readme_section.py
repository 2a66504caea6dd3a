"""What the demo and the reproduction study share: the machine's description, and replacing a generated section of
README.md (the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`), so that the numbers README shows are
the ones a script wrote (`demo.py --update-readme`, `reproduce.py --update-readme`)."""

import os
import platform
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def update_readme_section(name: str, body: str, readme: Path = README) -> None:
    """Put `body` between the section's markers; SystemExit naming the markers when README lacks them."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise SystemExit(f"{readme} needs exactly one {start} ... {end} section to update")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(f"{head}{start}\n{body.strip()}\n{end}{tail}")


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
