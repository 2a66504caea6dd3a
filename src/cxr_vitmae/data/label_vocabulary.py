"""One spelling per finding across the chest X-ray corpora.

Each corpus spells some findings its own way: NIH writes `Effusion`, `Pleural_Thickening` and (in its box file)
`Infiltrate`; CheXpert and MIMIC-CXR write `Pleural Effusion`, and the MIMIC-CXR 2.1.0 radiologist test labels
say `Airspace Opacity` where the other files say `Lung Opacity`. `canonical_label` maps any of these to one
canonical name, so that labels can be matched across corpora (an NIH model scored on CheXpert, say) without
string juggling at every call site. The builders themselves keep each corpus's own spelling in `label_names`.

The canonical names (`CANONICAL_LABELS`) are the union of the NIH ChestX-ray14 and CheXpert findings, written with
spaces and CheXpert's wording where the two corpora differ, plus COVIDx's `COVID-19`:

    Atelectasis, Cardiomegaly, Consolidation, COVID-19, Edema, Emphysema, Enlarged Cardiomediastinum, Fibrosis,
    Fracture, Hernia, Infiltration, Lung Lesion, Lung Opacity, Mass, No Finding, Nodule, Pleural Effusion,
    Pleural Other, Pleural Thickening, Pneumonia, Pneumothorax, Support Devices

Matching ignores case, underscores, hyphens and repeated spaces. COVIDx's `normal` has no canonical name on
purpose: it means "no pneumonia of either kind", which is not CheXpert's or NIH's `No Finding`.

`match_labels` pairs a model's labels with a corpus's (external validation) through this one table: only exact
equivalents are paired. NIH `Mass` / `Nodule` roll up to CheXpert `Lung Lesion` and NIH `Infiltration` is close to
`Lung Opacity`, but they are different canonical names and stay unpaired.
"""

import difflib
import re
from collections.abc import Sequence
from typing import NamedTuple

from ..errors import InputError
from .errors import CorpusError

CANONICAL_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "COVID-19",
    "Edema",
    "Emphysema",
    "Enlarged Cardiomediastinum",
    "Fibrosis",
    "Fracture",
    "Hernia",
    "Infiltration",
    "Lung Lesion",
    "Lung Opacity",
    "Mass",
    "No Finding",
    "Nodule",
    "Pleural Effusion",
    "Pleural Other",
    "Pleural Thickening",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

# Other spellings met in the corpora (or in their common derivatives), keyed by their normalised form.
_ALIASES = {
    "effusion": "Pleural Effusion",
    "infiltrate": "Infiltration",
    "infiltrates": "Infiltration",
    "airspace opacity": "Lung Opacity",
    "support device": "Support Devices",
    "covid19": "COVID-19",
}


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().casefold()


_LOOKUP = {_normalise(label): label for label in CANONICAL_LABELS} | {
    _normalise(alias): label for alias, label in _ALIASES.items()
}


def canonical_label(name: str) -> str:
    """The canonical spelling of finding `name` (`"Effusion"` → `"Pleural Effusion"`).

    Raises:
        CorpusError: `name` is not a known finding; the message lists the closest known names.
    """
    if not isinstance(name, str):
        raise CorpusError(f"A finding name must be a string, got {type(name).__name__} {name!r}")
    key = _normalise(name)
    if key in _LOOKUP:
        return _LOOKUP[key]
    close = difflib.get_close_matches(key, list(_LOOKUP), n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(_LOOKUP[match] for match in close))
    hint = f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    raise CorpusError(
        f"Unknown finding {name!r}{hint} Known findings: {', '.join(CANONICAL_LABELS)} "
        f"(aliases: {', '.join(sorted(_ALIASES))})"
    )


def same_finding(a: str, b: str) -> bool:
    """Whether `a` and `b` name the same finding (`same_finding("Infiltrate", "infiltration")` is True).

    Raises:
        CorpusError: either name is not a known finding.
    """
    return canonical_label(a) == canonical_label(b)


class LabelMatch(NamedTuple):
    """How a model's labels map onto a corpus's: `model_to_corpus` pairs the labels that name the same finding, in
    the corpus's order; `model_only` and `corpus_only` are the labels of each list left unpaired, in their own order."""

    model_to_corpus: dict[str, str]
    model_only: list[str]
    corpus_only: list[str]


def match_labels(model_labels: Sequence[str], corpus_labels: Sequence[str]) -> LabelMatch:
    """Pair the labels in `model_labels` with those in `corpus_labels` that name exactly the same finding
    (`Effusion` with `Pleural Effusion`; `Mass` with nothing in CheXpert's list, `Lung Lesion` being broader).

    A label with no canonical name (a user's own column, COVIDx's `normal`) pairs only with the same spelling, up to
    case, underscores, hyphens and spaces. A `pneumonia` in a list that also has a `COVID-19` class (COVIDx's) means
    pneumonia other than COVID-19, which no list without that class names.

    Raises:
        InputError: two labels of one list name the same finding, so which of them to pair is not known.
    """
    model_keys = _match_keys(model_labels, "the model's labels")
    corpus_keys = _match_keys(corpus_labels, "the corpus's labels")
    pairs = {model_keys[key]: label for key, label in corpus_keys.items() if key in model_keys}
    return LabelMatch(
        model_to_corpus=pairs,
        model_only=[label for label in model_labels if label not in pairs],
        corpus_only=[label for label in corpus_labels if label not in pairs.values()],
    )


def _match_keys(labels: Sequence[str], what: str) -> dict[tuple[str, str], str]:
    """What `match_labels` pairs each of `labels` by -> the label: a known finding by its canonical name, any other
    label by its normalised spelling (tagged apart, so that a spelling never stands in for a finding)."""
    findings = [_LOOKUP.get(_normalise(label)) for label in labels]
    keys: dict[tuple[str, str], str] = {}
    for label, finding in zip(labels, findings, strict=True):
        if finding is None:
            key = ("spelling", _normalise(label))
        elif finding == "Pneumonia" and "COVID-19" in findings:
            # Beside a COVID-19 class, a COVID-19 pneumonia is labelled COVID-19, not pneumonia: paired with a
            # Pneumonia of any cause, each COVID-19 pneumonia would be a positive of one label, a negative of the other.
            key = ("finding", "Pneumonia other than COVID-19")
        else:
            key = ("finding", finding)
        if key in keys:
            raise InputError(
                f"{what} {list(labels)} name the same finding twice ({keys[key]!r} and {label!r}); rename one"
            )
        keys[key] = label
    return keys


__all__ = ["CANONICAL_LABELS", "LabelMatch", "canonical_label", "match_labels", "same_finding"]
