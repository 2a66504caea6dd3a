"""Publishing a model directory on the Hugging Face Hub (`cxr-vitmae push`, the recipes' `--push_to_hub`).

`upload_set` decides, once, what a repository receives: weights, config, modeling code, image processor, the model
card (README.md), `metrics.json`, the training record, figures and the widget's phantom examples. `--dry-run` writes
that set to a directory; `push_to_hub` commits the same set with `HfApi.create_commit`, so what is checked locally is
byte for byte what is uploaded.

Images derived from corpora whose data-use agreements forbid redistribution (CheXpert, MIMIC-CXR) or from the user's
own data (patient data: the `csv`, `folder` and `hf` corpora, a pre-training union with the user's `folders`) are
refused: a figure that is not a plot of numbers (ROC or training curves) is taken to show corpus images, and the push
stops with an error naming it rather than leave it out unnoticed. Widget examples are always synthetic phantoms.

When the user's own data is anywhere in the model's lineage, the JSON records are published as `public_records`
leaves them (no path of the training machine), and nothing with per-image rows is ever uploaded: the predictions file
(image and patient ids of the test split) matches no `MODEL_FILE_PATTERNS`, for any corpus.
"""

from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import validate_repo_id

from ..errors import HubRequestError, InputError
from .model_card import DEFAULT_LICENSE, build_model_card, phantom_examples
from .provenance import (
    TRAINER_HISTORY_NAME,
    TRAINING_ARGS_NAME,
    holds_own_data,
    recorded_restrictions,
    training_corpora,
)
from .public_records import public_json

# Files of a model directory that belong on the Hub (checkpoints/, caches and the rest stay home).
MODEL_FILE_PATTERNS = (
    "config.json",
    "preprocessor_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "*.py",
    "metrics.json",
    TRAINER_HISTORY_NAME,
    TRAINING_ARGS_NAME,
)
FIGURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".pdf", ".gif", ".webp"}
# Figures that plot numbers and show no image of the corpus (figures.plot_roc_curves / plot_training_curves).
PLOT_FIGURE_PATTERNS = ("roc_*", "training_curves*")


def check_repo_id(repo_id: str | None) -> str:
    """`repo_id` if it is a valid `ORG/NAME` Hub model id, else a ValueError saying what is expected. The namespace
    is required: the card's widget links and usage snippets need the full id."""
    if not repo_id or "/" not in repo_id:
        raise InputError(f"expected a Hub repository id ORG/NAME, got {repo_id!r}")
    validate_repo_id(repo_id)
    return repo_id


def publishable_figures(model_dir: str | Path) -> list[Path]:
    """The figures of `model_dir/figures` that may be published.

    Raises:
        InputError: a figure other than ROC/training curves comes from a model trained or evaluated on CheXpert,
            MIMIC-CXR or the user's own data (their images may not be redistributed), or the directory records no
            corpus at all, so that nothing tells what the figure shows.
    """
    model_dir = Path(model_dir)
    figures = sorted(
        path for path in (model_dir / "figures").rglob("*") if path.is_file() and path.suffix in FIGURE_SUFFIXES
    )
    corpora = training_corpora(model_dir)
    restricted = recorded_restrictions(model_dir)
    for figure in figures:
        if any(fnmatch(figure.name, pattern) for pattern in PLOT_FIGURE_PATTERNS):
            continue
        if not corpora:
            raise InputError(
                f"{figure}: cannot tell which corpus this image shows (neither {TRAINING_ARGS_NAME} nor metrics.json "
                "records a dataset); remove it, or record the dataset, before publishing"
            )
        if restricted:
            raise InputError(
                f"{figure}: refusing to publish an image derived from {' and '.join(restricted)}, whose images may not "
                "be redistributed; remove it from the model directory (ROC and training curves may stay)"
            )
    return figures


def upload_set(
    model_dir: str | Path,
    repo_id: str,
    *,
    license: str = DEFAULT_LICENSE,
    base_model: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Path | bytes]:
    """Everything `repo_id` receives from `model_dir`, as `{path in the repository: local file or content}`.

    The model card is rendered here (its widget links point at `endpoint`, default the configured Hub), with
    synthetic phantom images as widget examples. With the user's own data in the model's lineage, the JSON files
    are replaced by their `public_json` content where it differs (module docstring).

    Raises:
        InputError: `repo_id` is not `ORG/NAME`, `model_dir` holds no cxr-vitmae model with safetensors weights, or
            a figure may not be published (see `publishable_figures`).
    """
    check_repo_id(repo_id)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InputError(f"{model_dir}: not a model directory (no config.json)")
    files: dict[str, Path | bytes] = {
        path.name: path
        for path in sorted(model_dir.iterdir())
        if path.is_file() and any(fnmatch(path.name, pattern) for pattern in MODEL_FILE_PATTERNS)
    }
    if not any(name.endswith(".safetensors") for name in files):
        raise InputError(f"{model_dir}: no *.safetensors weights to publish")
    if holds_own_data(model_dir):
        for name, path in list(files.items()):
            public = public_json(path) if name.endswith(".json") else None
            if public is not None:
                files[name] = public
    figures = publishable_figures(model_dir)
    files.update({figure.relative_to(model_dir).as_posix(): figure for figure in figures})
    examples = phantom_examples()
    card = build_model_card(
        model_dir,
        repo_id,
        examples=examples,
        figures=[figure.relative_to(model_dir).as_posix() for figure in figures],
        license=license,
        base_model=base_model,
        endpoint=endpoint,
    )
    if card.data.get("widget"):
        files.update({example.path_in_repo: example.png for example in examples})
    files["README.md"] = str(card).encode("utf-8")
    return dict(sorted(files.items()))


def write_upload_set(files: dict[str, Path | bytes], output_dir: str | Path) -> Path:
    """Write an upload set to `output_dir` (new or empty), laid out as the repository will be."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        # Leftover files would make the directory differ from what is uploaded.
        raise InputError(f"{output_dir}: exists and is not empty; the dry run needs a new or empty directory")
    for path_in_repo, source in files.items():
        target = output_dir / path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source if isinstance(source, bytes) else source.read_bytes())
    return output_dir


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    license: str = DEFAULT_LICENSE,
    base_model: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str = "Upload cxr-vitmae model",
) -> CommitInfo:
    """Create `repo_id` if needed (private with `private=True`; an existing repository keeps its visibility) and
    commit `upload_set(model_dir, repo_id)` to it in one commit. `token` and `endpoint` default to huggingface_hub's
    (HF_TOKEN or the saved login, HF_ENDPOINT or huggingface.co).

    Raises:
        InputError: see `upload_set`; nothing is sent then.
        HubRequestError: the Hub refused a request (authentication, permissions, invalid card metadata, ...).
    """
    api = HfApi(endpoint=endpoint, token=token)
    files = upload_set(model_dir, repo_id, license=license, base_model=base_model, endpoint=api.endpoint)
    operations = [
        CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=source) for path_in_repo, source in files.items()
    ]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.create_commit(repo_id, operations=operations, commit_message=commit_message)
    except HfHubHTTPError as error:
        # The Hub's message comes with request ids and hints over several lines; its first line says what failed.
        raise HubRequestError(f"pushing to {repo_id} on {api.endpoint} failed: {str(error).splitlines()[0]}") from error


__all__ = [
    "FIGURE_SUFFIXES",
    "MODEL_FILE_PATTERNS",
    "PLOT_FIGURE_PATTERNS",
    "check_repo_id",
    "publishable_figures",
    "push_to_hub",
    "upload_set",
    "write_upload_set",
]
