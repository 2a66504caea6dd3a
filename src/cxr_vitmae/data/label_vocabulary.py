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
"""

import difflib
import re

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


__all__ = ["CANONICAL_LABELS", "canonical_label", "same_finding"]
