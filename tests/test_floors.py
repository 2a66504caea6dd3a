"""The declared dependency floors are the versions the floors run installs (.ci/floors.txt), so a floor cannot drift
from what `make test-floors` proved. The app and development extras (gradio, pytest, ruff) are not part of that run."""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parent.parent
# The extras the floors run installs, next to the core dependencies.
TESTED_EXTRAS = ("dicom", "explain", "evaluate")


def declared_floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in TESTED_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    floors = {}
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name == "cxr-vitmae":
            continue
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lower) == 1, f"{text}: every dependency needs exactly one lower bound"
        floors[canonicalize_name(requirement.name)] = Version(lower[0])
    return floors


def pinned_floors() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_declared_floor_is_the_version_the_floors_run_installs():
    assert declared_floors() == pinned_floors()
