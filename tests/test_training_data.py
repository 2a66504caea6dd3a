"""The recipes' data path: per-example seeding that is reproducible, order-free and leaves every process generator
as it was."""

import random
import weakref

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from cxr_vitmae.data import CorpusError
from cxr_vitmae.data.transforms import finetuning_transform
from cxr_vitmae.training.data import TransformedCorpus


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), "L") for _ in range(6)]
    rows = datasets.Dataset.from_dict(
        {"image": images, "labels": [[float(i % 2), 0.0] for i in range(6)]},
        features=datasets.Features({"image": datasets.Image(), "labels": datasets.Sequence(datasets.Value("float32"))}),
    )
    return TransformedCorpus(rows, finetuning_transform(32), seed=7)


def test_an_example_depends_on_seed_epoch_and_index_only(corpus):
    forward = [corpus[index]["pixel_values"] for index in range(6)]
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    backward = [corpus[index]["pixel_values"] for index in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward, strict=True))
    corpus.set_epoch(1)
    try:
        assert not torch.equal(corpus[0]["pixel_values"], forward[0])
    finally:
        corpus.set_epoch(0)


def test_process_generators_are_left_as_they_were(corpus):
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    corpus[2]
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


def test_accelerator_generators_are_never_seeded(corpus, monkeypatch):
    # Seeding them per example would shift dropout and masking on a GPU run without workers, and before CUDA is
    # initialised each call records a formatted stack trace (about half a millisecond per image).
    def refuse(*args, **kwargs):
        raise AssertionError("an accelerator generator was seeded")

    for backend in ("cuda", "xpu", "mtia"):
        monkeypatch.setattr(getattr(torch, backend), "manual_seed_all", refuse)
    corpus[0]


def test_a_batch_read_gives_each_example_as_read_alone(corpus):
    # What a DataLoader calls: the rows come from one query, but every example keeps its own seed, whatever its
    # neighbours and position in the batch.
    alone = {index: corpus[index] for index in (4, 1, 3)}
    batch = corpus.__getitems__([4, 1, 3])
    assert [example["index"] for example in batch] == [4, 1, 3]
    for example in batch:
        expected = alone[example["index"]]
        assert torch.equal(example["pixel_values"], expected["pixel_values"])
        assert torch.equal(example["labels"], expected["labels"])
    assert not torch.equal(batch[0]["pixel_values"], batch[2]["pixel_values"])


def test_a_batch_read_leaves_process_generators_as_they_were(corpus):
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    corpus.__getitems__([0, 5, 2])
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


def test_a_batch_read_decodes_one_image_at_a_time(corpus):
    # A batch of full-size radiographs decoded at once would be about a gigabyte per worker (128 MIMIC-CXR JPEGs):
    # each image must be garbage by the time the next one is transformed.
    received = []

    def transform(image):
        assert all(reference() is None for reference in received), "an earlier decoded image is still held"
        received.append(weakref.ref(image))
        return corpus.transform(image)

    batch_reader = TransformedCorpus(corpus.dataset, transform, seed=corpus.seed)
    batch = batch_reader.__getitems__([0, 1, 2, 3])
    assert len(received) == 4
    assert torch.equal(batch[3]["pixel_values"], corpus[3]["pixel_values"])


def test_an_image_damaged_inside_is_named_when_decoded(tmp_path):
    path = tmp_path / "00000001_000.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8), "L").save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # compressed pixels zeroed; the file still ends with IEND
    path.write_bytes(bytes(data))
    rows = datasets.Dataset.from_dict(
        {"image": [str(path)], "labels": [[1.0, 0.0]]},
        features=datasets.Features({"image": datasets.Image(), "labels": datasets.Sequence(datasets.Value("float32"))}),
    )
    with pytest.raises(CorpusError, match=r"example 0: the image .*00000001_000\.png cannot be decoded"):
        TransformedCorpus(rows, finetuning_transform(32), seed=7)[0]
