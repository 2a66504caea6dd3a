"""Test-wide environment: nothing touches the network and nothing writes to the user's Hugging Face cache."""

import os
import tempfile

# Set before any test module imports huggingface_hub / transformers, which read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="cxr-vitmae-hf-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
