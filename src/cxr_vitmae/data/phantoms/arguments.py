"""The generator's arguments: the named difficulty levels and the checks every corpus writer applies before it
writes anything."""

from __future__ import annotations

from ...errors import InputError
from .plan import TEST_FRACTION

DIFFICULTY_LEVELS = {"easy": 0.2, "medium": 0.5, "hard": 0.8}
DIFFICULTY_CHOICES = tuple(DIFFICULTY_LEVELS)
DIFFICULTY = "medium"
# Below this the lungs, ribs and findings are narrower than the pixels that would draw them.
MIN_SIZE = 32


def resolve_difficulty(difficulty: str | float) -> float:
    """A level name of `DIFFICULTY_LEVELS` or a number in [0, 1] as the float the renderer uses."""
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTY_LEVELS:
            raise InputError(f"difficulty {difficulty!r}: expected one of {', '.join(DIFFICULTY_CHOICES)} or 0..1")
        return DIFFICULTY_LEVELS[difficulty]
    value = float(difficulty)
    if not 0.0 <= value <= 1.0:
        raise InputError(f"difficulty {difficulty!r}: expected a number in [0, 1] or one of {DIFFICULTY_CHOICES}")
    return value


def checked_variation(variation: float) -> float:
    """The variation factor as the renderer's float: positive and finite (1 draws today's phantoms)."""
    value = float(variation)
    if not 0.0 < value < float("inf"):
        raise InputError(f"variation {variation!r}: expected a positive number (1: the default phantoms' spread)")
    return value


def checked_test_fraction(test_fraction: float) -> float:
    """The share of the images planned as test patients', as a float strictly between 0 and 1."""
    value = float(test_fraction)
    if not 0.0 < value < 1.0:
        raise InputError(
            f"test_fraction {test_fraction!r}: expected a number between 0 and 1 (NIH's share: {TEST_FRACTION:.3f})"
        )
    return value


def checked_difficulty(num_images: int, size: int, difficulty: str | float) -> float:
    """Refuse an empty corpus or a size too small to draw on, and return the difficulty as the renderer's float."""
    if int(num_images) < 1:
        raise InputError(f"num_images must be at least 1, got {num_images}")
    if int(size) < MIN_SIZE:
        raise InputError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    return resolve_difficulty(difficulty)
