"""A model as users name it, to a command or a function: a local model directory, or a Hub repository id
(`ORG/NAME`), which huggingface_hub downloads into its cache (or finds there when offline)."""

from os import PathLike
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .errors import InputError


def is_repo_id(name: str) -> bool:
    """Whether `name` reads as a Hub repository id ORG/NAME (it may still name a local path: check that first)."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return name.count("/") == 1


def model_directory(model: str | PathLike) -> Path:
    """The local directory holding `model`: the directory itself, or the Hub repository's downloaded snapshot.

    Raises:
        InputError: a local path without `config.json`, a name that is neither a path nor a repository id, or a
            repository the Hub does not give (unknown, private, or not cached while offline).
    """
    path = Path(model)
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: not a model directory (no config.json)")
        return path
    name = str(model)
    if not is_repo_id(name):
        raise InputError(f"{name}: no such model directory, and not a Hub repository id ORG/NAME either")
    try:
        snapshot = Path(snapshot_download(name))
    except RepositoryNotFoundError as error:
        raise InputError(
            f"{name}: no such local directory, and no such repository on the Hub (or it is private and no valid token "
            "was given: set HF_TOKEN or run `hf auth login`)"
        ) from error
    except LocalEntryNotFoundError as error:
        raise InputError(
            f"{name}: no such local directory, and the Hub repository is not in the local cache while the Hub cannot "
            "be reached (HF_HUB_OFFLINE or no connection)"
        ) from error
    # Anything else that keeps the Hub from giving this one repository (a server error, a gated repository) is the
    # user's to see and fix; huggingface_hub raises these as OSError or ValueError subclasses.
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(
            f"{name}: no such local directory, and the Hub did not give this repository ({reason})"
        ) from error
    if not (snapshot / "config.json").is_file():
        raise InputError(f"{name}: the Hub repository holds no model (no config.json)")
    return snapshot


def model_name(model: str | PathLike) -> str:
    """How figure titles name `model`: a local directory by its own name, a Hub repository by its id as given."""
    return Path(model).resolve().name if Path(model).exists() else str(model)


__all__ = ["model_directory", "model_name"]
