"""Helpers shared by the corpus tests: damage a written corpus as real downloads go wrong, and expect the refusal."""

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from cxr_vitmae.data import CorpusError


def truncate(path: Path, cut: int) -> None:
    """Drop the last CUT bytes of an image so that it is still identifiable: only a decode would fail."""
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    with Image.open(path) as image:
        assert image.size


def rewrite(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace the first COUNT occurrences of OLD, which must be there."""
    text = path.read_text()
    assert text.count(old) >= count
    path.write_text(text.replace(old, new, count))


def assert_refused(data_dir: Path, corrupt: Callable[[Path], None], read: Callable[[Path], object], message: str):
    """CORRUPT the corpus at DATA_DIR, then expect READ(DATA_DIR) to raise a CorpusError matching MESSAGE."""
    corrupt(data_dir)
    with pytest.raises(CorpusError, match=message):
        read(data_dir)
