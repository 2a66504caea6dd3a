"""A Hub repository id wherever a model directory goes (`model_directory`): the console script, run as a user runs it,
downloads the model from a Hub (the local server of tests/fake_hub.py, no mocks) into huggingface_hub's cache, and
finds it there when offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from fake_hub import FakeHub, git_blob_id
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from model_helpers import randomize_, tiny_vit_config
from PIL import Image

from cxr_vitmae import ViTMAEForChestXray
from cxr_vitmae.cli import main as cli
from cxr_vitmae.hub.push import push_to_hub

CONSOLE_SCRIPT = Path(sys.executable).parent / "cxr-vitmae"
TOKEN = "hf_fake_token"
PUBLIC, PRIVATE = "cxr-lab/tiny-classifier", "cxr-lab/private-classifier"


@pytest.fixture(scope="module")
def hub():
    with FakeHub(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def model_dir(hub, tmp_path_factory) -> Path:
    """A tiny random classifier, pushed to the fake Hub as PUBLIC and as PRIVATE (the conftest's offline mode is
    lifted for the pushes only)."""
    path = tmp_path_factory.mktemp("hub-models") / "classifier"
    randomize_(ViTMAEForChestXray(tiny_vit_config())).save_pretrained(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        push_to_hub(path, PUBLIC, token=TOKEN, endpoint=hub.url)
        push_to_hub(path, PRIVATE, private=True, token=TOKEN, endpoint=hub.url)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "patient 0001.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 65536, (70, 60), dtype=np.uint16)).save(path)
    return path


def cxr_vitmae(*args: str, hub: FakeHub, hf_home: Path, offline: bool = False):
    """The console script in a fresh process configured as a user's shell would: HF_ENDPOINT, HF_HUB_OFFLINE and
    HF_HOME (huggingface_hub reads them at import time), no token."""
    assert CONSOLE_SCRIPT.exists(), "the package must be installed (make test does this) for its console script"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HOME": str(hf_home)}
    env.pop("HF_TOKEN", None)
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env)


def predictions(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.slow
def test_predict_downloads_a_hub_model_then_runs_offline_from_the_cache(hub, model_dir, image, tmp_path, capsys):
    # The reference: the same command on the local directory (in-process, to spare an interpreter start-up).
    assert cli(["predict", str(model_dir), str(image)]) == 0
    local = json.loads(capsys.readouterr().out)

    hf_home = tmp_path / "hf_home"
    downloaded = predictions(cxr_vitmae("predict", PUBLIC, str(image), hub=hub, hf_home=hf_home))
    assert downloaded == local
    # The snapshot in the user's cache is the repository at its last commit, every file byte-identical.
    commit = hub.repos[PUBLIC].commits[-1]
    snapshot = hf_home / "hub" / "models--cxr-lab--tiny-classifier" / "snapshots" / commit
    on_hub = hub.repos[PUBLIC].files
    assert {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()} == on_hub
    assert {request.path for request in hub.calls(f"/{PUBLIC}/resolve/") if request.method == "GET"} == {
        f"/{PUBLIC}/resolve/{commit}/{name}" for name in on_hub
    }

    requests_so_far = len(hub.requests)
    offline = predictions(cxr_vitmae("predict", PUBLIC, str(image), hub=hub, hf_home=hf_home, offline=True))
    assert offline == local
    assert len(hub.requests) == requests_so_far, "offline, nothing may reach the Hub"


@pytest.mark.slow
def test_unknown_repo_id_is_one_line_naming_it(hub, image, tmp_path):
    result = cxr_vitmae("predict", "cxr-lab/no-such-model", str(image), hub=hub, hf_home=tmp_path)
    assert result.returncode == 1 and result.stdout == "", result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cxr-lab/no-such-model" in lines[0], result.stderr[-3000:]
    assert "no such repository on the Hub" in lines[0]
    # The Hub was asked and said no (rather than the command giving up before asking).
    assert hub.calls("/api/models/cxr-lab/no-such-model/revision/main")


def test_fake_hub_answers_as_the_hub_does(hub, model_dir, tmp_path, monkeypatch):
    """The fake's download endpoints through huggingface_hub's own calls: revisions, tree listings, private
    repositories, errors."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo("cxr-lab/two-commits")
    first = api.upload_file(path_or_fileobj=b"one", path_in_repo="a/b/c.txt", repo_id="cxr-lab/two-commits").oid
    api.upload_file(path_or_fileobj=b"two!", path_in_repo="a/b/c.txt", repo_id="cxr-lab/two-commits")
    download = {"repo_id": "cxr-lab/two-commits", "endpoint": hub.url, "token": TOKEN, "cache_dir": tmp_path}

    assert Path(hf_hub_download(filename="a/b/c.txt", **download)).read_bytes() == b"two!"
    assert Path(hf_hub_download(filename="a/b/c.txt", revision=first, **download)).read_bytes() == b"one"
    assert (Path(snapshot_download(revision=first, **download)) / "a" / "b" / "c.txt").read_bytes() == b"one"

    info = api.model_info("cxr-lab/two-commits", files_metadata=True)
    assert info.sha == hub.repos["cxr-lab/two-commits"].commits[-1] and info.siblings[0].blob_id == git_blob_id(b"two!")
    listing = {entry.path: type(entry).__name__ for entry in api.list_repo_tree("cxr-lab/two-commits", recursive=True)}
    assert listing == {"a": "RepoFolder", "a/b": "RepoFolder", "a/b/c.txt": "RepoFile"}
    assert [entry.path for entry in api.list_repo_tree("cxr-lab/two-commits", path_in_repo="a")] == ["a/b"]

    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(filename="missing.txt", **download)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(revision="v1.0", **download)
    private = Path(snapshot_download(**{**download, "repo_id": PRIVATE}))
    assert (private / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(**{**download, "repo_id": PRIVATE, "token": False, "cache_dir": tmp_path / "anonymous"})
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(**{**download, "repo_id": PRIVATE, "token": "hf_someone_else", "cache_dir": tmp_path / "x"})
