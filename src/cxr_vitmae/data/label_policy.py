"""Report-labeller cells (1 / 0 / -1 uncertain / blank) and the policies that turn them into training targets.

CheXpert, MIMIC-CXR and a user's own table (`csv`, `hf`) write labels the way the CheXpert labeller does: `1.0`
positive, `0.0` negative, `-1.0` uncertain, blank not mentioned (some re-exports write `1`, `0`, `-1`). Two policies,
each one name for every class or a mapping class → name, decide what the uncertain and the blank cells become:

- uncertainty: `"ones"` (U-Ones), `"zeros"` (U-Zeros) or `"ignore"` (NaN: masked out of the loss and the metrics);
- blank: `"zeros"` (not mentioned = absent) or `"ignore"` (NaN).

`parse_label_cells` reads the cells strictly (anything else is a CorpusError naming file, line and column),
`policy_values` resolves a policy per class, and `apply_policies` makes the float32 `labels` matrix.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CorpusError
from .label_vocabulary import canonical_label

UNCERTAINTY_VALUES = {"ones": 1.0, "zeros": 0.0, "ignore": float("nan")}
BLANK_VALUES = {"zeros": 0.0, "ignore": float("nan")}
# The cell spellings met in labeller files (floats) and re-exports (integers); "" is blank.
_CELL_VALUES = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0}


def parse_label_cells(frame: pd.DataFrame, columns: Sequence[str], path: str | Path, first_line: int = 2) -> np.ndarray:
    """`columns` of `frame` (string cells, blanks as "") as a float32 matrix of 1 / 0 / -1 / NaN (blank).

    `first_line` is the file line of the row whose index is 0 (2 below a one-line header), so that an error points
    at the line a spreadsheet shows.

    Raises:
        CorpusError: a cell holds anything else, naming file, line, column and the value.
    """
    raw = np.empty((len(frame), len(columns)), dtype=np.float32)
    for index, name in enumerate(columns):
        cells = frame[name].astype(str).str.strip()
        known = cells.isin(list(_CELL_VALUES)) | (cells == "")
        if not known.all():
            position = int(np.flatnonzero(~known.to_numpy())[0])
            # The frame's index keeps the row's place in the file where blank lines were dropped.
            line = frame.index[position] + first_line
            raise CorpusError(
                f"{path}, line {line}, column {name!r}: label value {cells.iloc[position]!r}; expected "
                "1, 0, -1 (uncertain) or blank"
            )
        raw[:, index] = cells.map(lambda cell: _CELL_VALUES.get(cell, np.nan)).to_numpy(dtype=np.float32)
    return raw


def _class_key(name: str) -> str:
    """How a class named in a policy is matched to a label: by finding (`Effusion` is `Pleural Effusion`) when it is
    one the vocabulary knows, else by its exact spelling (a user's own columns)."""
    try:
        return canonical_label(name)
    except CorpusError:
        return name


def policy_values(
    policy: str | Mapping[str, str],
    values: Mapping[str, float],
    default: str,
    option: str,
    label_names: Sequence[str],
) -> np.ndarray:
    """The float each class's cell becomes under `policy` (one name for all classes, or label → name; classes it
    leaves out get `default`). Labels may be written in any corpus's spelling, `Effusion` for `Pleural Effusion`.

    Raises:
        CorpusError: an unknown policy name or class, or one class given two policies, naming the option.
    """
    if isinstance(policy, str):
        policy = dict.fromkeys(label_names, policy)
    elif isinstance(policy, Mapping):
        by_key = {_class_key(name): name for name in label_names}
        resolved_policy: dict[str, str] = {}
        for given, choice in policy.items():
            name = by_key.get(_class_key(str(given)))
            if name is None:
                raise CorpusError(f"option {option}: unknown label {given!r}; expected names from {list(label_names)}")
            if resolved_policy.setdefault(name, choice) != choice:
                raise CorpusError(f"option {option}: {name!r} is given two policies ({given!r} is one of its names)")
        policy = resolved_policy
    else:
        raise CorpusError(f"option {option}={policy!r}: expected a policy name or a mapping label -> policy name")
    resolved = []
    for name in label_names:
        choice = policy.get(name, default)
        if choice not in values:
            raise CorpusError(f"option {option} for {name!r} is {choice!r}; expected one of {', '.join(values)}")
        resolved.append(values[choice])
    return np.asarray(resolved, dtype=np.float32)


def apply_policies(raw: np.ndarray, uncertainty: np.ndarray, blank: np.ndarray) -> np.ndarray:
    """`raw` cells (from `parse_label_cells`) with each class's uncertain (-1) and blank (NaN) cells replaced by its
    policy value (from `policy_values`)."""
    uncertain, unmentioned = raw == -1.0, np.isnan(raw)
    labels = raw.astype(np.float32, copy=True)
    labels[uncertain] = np.broadcast_to(uncertainty, raw.shape)[uncertain]
    labels[unmentioned] = np.broadcast_to(blank, raw.shape)[unmentioned]
    return labels


__all__ = ["BLANK_VALUES", "UNCERTAINTY_VALUES", "apply_policies", "parse_label_cells", "policy_values"]
