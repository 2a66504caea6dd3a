"""Test-wide environment: nothing touches the network and nothing writes to the user's Hugging Face cache."""

import os
import tempfile
from pathlib import Path

# Set before any test module imports huggingface_hub / transformers, which read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="cxr-vitmae-hf-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist each worker is a process of its own: it and the commands it starts get their share of the cores
# rather than a thread per core each (2 workers x 2 OpenMP threads on 2 cores spin against each other). Set before
# torch is imported, which reads it then. A test that sets OMP_NUM_THREADS for its subprocesses keeps its own value,
# and `accelerate launch --num_cpu_threads_per_process N` (the reproduction study's launches) sets N for its process.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def phantom_corpus(tmp_path_factory):
    """A factory of phantom corpora shared by the whole session (each xdist worker builds its own):
    `phantom_corpus(num_images, size=48, seed=1, layout="nih", difficulty=None)` is the corpus directory (difficulty
    None: the generator's default), written once per distinct argument set. Tests read it and must not write into it
    (outputs go to their own tmp_path)."""
    from cxr_vitmae.data.phantoms import write_phantom_layout

    built: dict[tuple, Path] = {}

    def build(num_images: int, *, size: int = 48, seed: int = 1, layout: str = "nih", difficulty=None) -> Path:
        key = (num_images, size, seed, layout, difficulty)
        if key not in built:
            root = tmp_path_factory.mktemp(f"phantoms-{layout}-{num_images}-{size}px-seed{seed}")
            options = {} if difficulty is None else {"difficulty": difficulty}
            corpus = write_phantom_layout(root, num_images, layout=layout, size=size, seed=seed, **options)
            built[key] = Path(corpus.output_dir)
        return built[key]

    return build


@pytest.fixture(scope="session")
def phantoms(phantom_corpus) -> Path:
    """The recipe tests' NIH-layout corpus: 160 easy phantoms at 48 px (seed 1)."""
    return phantom_corpus(160, size=48, seed=1, difficulty="easy")


@pytest.fixture(scope="session")
def tiny_model():
    """A factory: `tiny_model("vit" | "densenet" | "timm", **config_fields)` is a new randomly initialised classifier
    of that family at 32 px (ViT: one block, patch 8; DenseNet: two 2-layer blocks; timm: resnet10t)."""

    def build(family: str, **fields):
        return _TINY_MODELS[family](**fields)

    return build


def _vit_classifier(**fields):
    from cxr_vitmae import CXRViTMAEConfig, ViTMAEForChestXray

    defaults = {"image_size": 32, "patch_size": 8, "num_hidden_layers": 1}
    return ViTMAEForChestXray(CXRViTMAEConfig.from_preset("vit-tiny", **{**defaults, **fields}))


def _densenet_classifier(**fields):
    from cxr_vitmae import CXRDenseNetConfig, DenseNetForChestXray

    defaults = {"growth_rate": 8, "block_config": (2, 2), "image_size": 32}
    return DenseNetForChestXray(CXRDenseNetConfig(**{**defaults, **fields}))


def _timm_classifier(**fields):
    from cxr_vitmae import CXRTimmConfig, TimmForChestXray

    return TimmForChestXray(CXRTimmConfig.from_preset("timm:resnet10t", **{"image_size": 32, **fields}))


_TINY_MODELS = {"vit": _vit_classifier, "densenet": _densenet_classifier, "timm": _timm_classifier}
