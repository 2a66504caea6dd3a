"""What a model directory publishes of its JSON records when the user's own data (patient data) is in its lineage:
`training_args.json`, `metrics.json`, `trainer_history.json` (and any other JSON file of the upload set) with every
location on the training machine withheld.

The records hold no per-image rows: the test split's image and patient ids are in the predictions file, which is never
uploaded (`push.MODEL_FILE_PATTERNS`). They do hold paths: the corpus folder, the output directory, a starting model
directory, options such as an `exclude` list or a local dataset folder, the model directory `cxr-vitmae evaluate` was
given. A path can name a user, a site or a study, so `public_record`:

- replaces the run's locations (`LOCATION_KEYS`) by `WITHHELD`, in the run's record and in every starting run's
  (`base_model_run`);
- turns a starting `model` that is no preset into the Hub id it was published under (the record's `base_model`),
  else its directory's name;
- cuts every other absolute path, whole value or inside a sentence (a split source), to its last component
  (`/data/icu/labels.csv` -> `labels.csv`): what a reader needs to know which table, nothing of where it was.

The model card is built from records passed through `public_record` whatever the corpus, so it cannot say more than
they do; the upload set replaces the JSON files by them only for own data (the public corpora's records are published
as the recipes wrote them).
"""

import json
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..errors import InputError
from .provenance import is_preset

# A run's locations on the training machine: recipe arguments, and what trackers and evaluation may add.
LOCATION_KEYS = ("data_dir", "output_dir", "logging_dir", "cache_dir", "resume_from_checkpoint")
WITHHELD = "<withheld: a location on the training machine>"
# An absolute path inside a sentence (POSIX `/data/x`, `~/x`, Windows `C:\x` or `\\server\x`): it starts the text or
# follows a space, quote, bracket or `=`, and ends before whitespace, a quote, a comma, a semicolon or a closing
# bracket. A slash after a word ("AP/PA", "1/0/-1") or followed by a space ("train / validation") starts none.
_SEGMENT = r"""[^\s/\\'",;)\]]"""  # one character of a path component
_START = r"""(?:(?<=^)|(?<=[\s'"(\[=]))(?:~|[A-Za-z]:)?"""  # where a path may begin, with its home or drive
_EMBEDDED_PATH = re.compile(rf"{_START}[/\\]{{1,2}}{_SEGMENT}+(?:[/\\]{_SEGMENT}*)*")


def public_record(record: Any) -> Any:
    """`record` (a JSON value) with every location on the training machine withheld (module docstring)."""
    # Whole-value paths are found first: a path with spaces inside a sentence is only recognisable as a known one.
    known = sorted({text for text in _strings(record) if _is_absolute(text)}, key=len, reverse=True)
    return _scrub(_withhold_locations(record), known)


def public_json(path: Path) -> bytes | None:
    """The JSON file `path` as `public_record` leaves it, or None when it holds nothing to withhold (the file is then
    published as written)."""
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    public = public_record(record)
    return None if public == record else (json.dumps(public, indent=2) + "\n").encode("utf-8")


def _withhold_locations(value: Any) -> Any:
    if isinstance(value, list):
        return [_withhold_locations(item) for item in value]
    if not isinstance(value, dict):
        return value
    result = {}
    for key, item in value.items():
        if key in LOCATION_KEYS and item is not None:
            result[key] = WITHHELD
        elif key == "model" and isinstance(item, str) and not is_preset(item):
            # A starting model directory: the Hub id its run published it under (recorded as `base_model`, the
            # card's base model), else only its name. A Hub id given as --model is cut to its name too: a recipe
            # run does not record which of the two it was.
            result[key] = value.get("base_model") or _last_component(item)
        else:
            result[key] = _withhold_locations(item)
    return result


def _scrub(value: Any, known: list[str]) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, known)
    if isinstance(value, list):
        return [_scrub(item, known) for item in value]
    if isinstance(value, dict):
        return {_scrub_text(key, known): _scrub(item, known) for key, item in value.items()}
    return value


def _scrub_text(text: str, known: list[str]) -> str:
    if text == WITHHELD:
        return text
    if _is_absolute(text):
        return _last_component(text)
    for path in known:
        text = text.replace(path, _last_component(path))
    return _EMBEDDED_PATH.sub(lambda match: _last_component(match.group()), text)


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def _is_absolute(text: str) -> bool:
    text = text.strip()
    return text.startswith("~") or PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute()


def _last_component(path: str) -> str:
    """The file or folder name a path ends with (`WITHHELD` for a root, which has none)."""
    parts = [part for part in re.split(r"[/\\]", path.strip()) if part and part != "~" and not part.endswith(":")]
    return parts[-1] if parts else WITHHELD


__all__ = ["LOCATION_KEYS", "WITHHELD", "public_json", "public_record"]
