"""`cxr-vitmae predict` at archive scale (issue 26, item 5), and the custom pipeline streaming like stock pipelines.

Real files throughout: PNG (8- and 16-bit), JPEG and DICOM radiographs written here, a tiny saved ViT classifier, the
real command line (in-process through `cli.main`, and as a console-script process where it is killed). Every score is
checked against `predict_images` on the same files, the numbers `predict` has always printed as JSON; 16-bit files
are there so that an 8-bit route would show. Scores are rounded to 6 decimals, and a batch of another composition
can move the 6th decimal by one step, hence the 1e-6 bound (plus float slack)."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from model_helpers import one_error_line, randomize_, run_without_package, tiny_vit_config
from PIL import Image

from cxr_vitmae import ViTMAEForChestXray
from cxr_vitmae.batch_predict import expand_inputs
from cxr_vitmae.cli import main
from cxr_vitmae.errors import InputError
from cxr_vitmae.predict import decode_images, load_classifier, predict_images
from cxr_vitmae.prediction_files import open_predictions

CONSOLE_SCRIPT = Path(sys.executable).parent / "cxr-vitmae"
TOLERANCE = 1e-6 + 1e-12  # one step of the 6th decimal, and the float error of that difference
FORMATS = ["csv", "jsonl", "parquet"]
BATCH = ["--batch-size", "4"]


def _write_radiograph(path: Path, seed: int) -> Path:
    """A small radiograph-like image: a bright body with two darker lungs and noise; sizes and bit depths vary."""
    rng = np.random.default_rng(seed)
    height, width = 40 + seed % 7 * 4, 36 + seed % 5 * 6
    rows, cols = np.mgrid[0:height, 0:width] / np.array([height, width], dtype=float)[:, None, None]
    lungs = sum(np.exp(-(((cols - c) / 0.15) ** 2 + ((rows - 0.5) / 0.3) ** 2)) for c in (0.3, 0.7))
    image = np.clip(0.8 - 0.6 * lungs + rng.normal(0, 0.05, rows.shape), 0, 1)
    if path.suffix == ".jpg":
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path, quality=95)
    elif seed % 3 == 0:  # 12-bit values in a 16-bit PNG, which an 8-bit loader would saturate
        Image.fromarray(np.round(image * 4000).astype(np.uint16)).save(path)
    else:
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_batch")
    randomize_(ViTMAEForChestXray(tiny_vit_config())).eval().save_pretrained(root / "model")
    # 40 images in two sub-folders (the format tests) and 160 more (the killed run).
    archive = root / "archive"
    images = []
    for index in range(200):
        folder = archive / ("small" if index < 40 else "large") / f"site{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".jpg" if index % 10 == 7 else ".png"
        images.append(_write_radiograph(folder / f"patient_{index:03d}{suffix}", index))
    model, processor = load_classifier(root / "model")
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    reference = predict_images(model, processor, decode_images(images), batch_size=4)
    # The model on the processor's own reading of each file, one at a time: what those scores must be.
    with torch.no_grad():
        direct = {str(path): torch.sigmoid(model(**processor(str(path), return_tensors="pt")).logits[0]).tolist()
                  for path in images[:40]}  # fmt: skip
    return {"root": root, "model": str(root / "model"), "archive": archive, "labels": labels, "reference": reference,
            "direct": direct}  # fmt: skip


def _read_output(path: Path) -> pd.DataFrame:
    suffix = path.suffix
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_parquet(path)


def _assert_rows_match(frame: pd.DataFrame, expected_images: list[str], labels: list[str], reference: dict) -> None:
    """One row per image, in `expected_images` order, columns image + labels, scores as `predict_images` gives."""
    assert list(frame.columns) == ["image", *labels]
    assert list(frame["image"]) == expected_images
    for image, *scores in frame.itertuples(index=False, name=None):
        expected = reference[str(Path(image).resolve())]
        worst = max(abs(score - expected[label]) for score, label in zip(scores, labels, strict=True))
        assert worst <= TOLERANCE, (image, worst)


def _small_images(setup) -> list[str]:
    return sorted(str(path) for path in (setup["archive"] / "small").rglob("*.*"))


@pytest.fixture(scope="module")
def resolved_reference(setup):
    """`predict_images`' scores keyed by resolved path, whatever path form a command printed."""
    return {str(Path(image).resolve()): scores for image, scores in setup["reference"].items()}


# --- inputs -----------------------------------------------------------------------------------------------------------


def test_inputs_expand_files_folders_globs_and_lists_in_a_fixed_order(tmp_path):
    for name in ("b/2.png", "b/1.dcm", "a/x.jpeg", "a/.hidden/h.png", ".h.png", "a/notes.csv", "a/IM0001", "c.JPG"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    folder = sorted(["a/x.jpeg", "b/1.dcm", "b/2.png", "c.JPG"])
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / name) for name in folder]

    # An extension-less file counts when named; the given order is kept; a repeat is kept at its first place.
    given = [str(tmp_path / "a/IM0001"), str(tmp_path / "b"), str(tmp_path / "a/x.jpeg")]
    assert expand_inputs(given) == [given[0], str(tmp_path / "b/1.dcm"), str(tmp_path / "b/2.png"), given[2]]

    # A pattern the shell left alone: Python expands it (recursive **), sorted; folders among the matches recurse.
    assert expand_inputs([str(tmp_path / "**" / "*.png")]) == [str(tmp_path / "b/2.png")]
    ab = [str(tmp_path / name) for name in ("a/x.jpeg", "b/1.dcm", "b/2.png")]
    assert expand_inputs([str(tmp_path / "[ab]")]) == ab

    # A list: one path per line, relative to the list's folder; blank lines skipped; a missing file is kept (it is
    # reported as unreadable by the run, not here).
    (tmp_path / "lists").mkdir()
    listed = tmp_path / "lists" / "batch.txt"
    listed.write_text(f"../b/2.png\n\n  ../a/IM0001  \n{tmp_path / 'c.JPG'}\n../missing.png\n")
    assert expand_inputs([str(listed)]) == [
        str(tmp_path / "lists/../b/2.png"),
        str(tmp_path / "lists/../a/IM0001"),
        str(tmp_path / "c.JPG"),
        str(tmp_path / "lists/../missing.png"),
    ]

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("\n")
    for bad, message in [
        (tmp_path / "empty", "no image files"),
        (tmp_path / "nothing-*.png", "no image file matches"),
        (tmp_path / "empty.txt", "names no image"),
        (tmp_path / "absent.txt", "cannot read this list"),
    ]:
        with pytest.raises(InputError, match=message) as raised:
            expand_inputs([str(bad)])
        assert str(bad) in str(raised.value)


# --- output files -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("suffix", FORMATS)
def test_every_output_format_holds_the_json_scores(setup, resolved_reference, tmp_path, capsys, suffix):
    output = tmp_path / f"scores.{suffix}"
    assert main(["predict", setup["model"], str(setup["archive"] / "small"), "--output", str(output), *BATCH]) == 0
    assert capsys.readouterr().out.strip() == f"40 images scored -> {output}"
    frame = _read_output(output)
    _assert_rows_match(frame, _small_images(setup), setup["labels"], resolved_reference)
    direct = np.array([setup["direct"][image] for image in frame["image"]])
    assert np.abs(frame[setup["labels"]].to_numpy() - direct).max() <= TOLERANCE
    assert not Path(f"{output}.errors.csv").exists()
    # No part or temporary file left: the scores and the record of the model that wrote them (what --resume checks).
    assert sorted(path.name for path in tmp_path.iterdir()) == [output.name, f"{output.name}.run.json"]


def test_json_on_stdout_is_what_predict_images_gives(setup, resolved_reference, tmp_path, capsys):
    # A folder, a glob the shell did not expand and a list file, given together: each image once, in that order.
    small = setup["archive"] / "small"
    listed = tmp_path / "listed.txt"
    listed.write_text(os.path.relpath(small / "site0" / "patient_000.png", tmp_path) + "\n")
    argv = ["predict", setup["model"], str(small / "site1"), str(small / "site0" / "*_00[0-4].png"), str(listed)]
    capsys.readouterr()
    assert main([*argv, *BATCH]) == 0
    printed = json.loads(capsys.readouterr().out)
    site1 = sorted(str(path) for path in (small / "site1").iterdir())
    expected = [*site1, *(str(small / "site0" / f"patient_00{i}.png") for i in (0, 2, 4))]
    expected.append(str(tmp_path / listed.read_text().strip()))  # the same file by another name: its own key
    assert list(printed) == expected
    for image, scores in printed.items():
        assert list(scores) == setup["labels"]
        reference = resolved_reference[str(Path(image).resolve())]
        assert max(abs(scores[label] - reference[label]) for label in scores) <= TOLERANCE, image


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_corrupt_file_gives_every_other_row_and_one_error_entry(setup, resolved_reference, tmp_path, capsys, suffix):
    images = _small_images(setup)
    corrupt = tmp_path / "patient_corrupt.png"
    corrupt.write_bytes(Path(images[0]).read_bytes()[:60])  # a PNG cut short, as an interrupted copy leaves it
    listed = tmp_path / "images.txt"
    listed.write_text("\n".join([*images[:10], corrupt.name, *images[10:]]) + "\n")
    output = tmp_path / f"scores.{suffix}"
    assert main(["predict", setup["model"], str(listed), "--output", str(output), *BATCH]) == 0
    errors_file = Path(f"{output}.errors.csv")
    assert capsys.readouterr().out.strip() == f"40 images scored; 1 unreadable, listed in {errors_file} -> {output}"
    _assert_rows_match(_read_output(output), images, setup["labels"], resolved_reference)
    errors = pd.read_csv(errors_file)
    assert list(errors.columns) == ["image", "error"] and list(errors["image"]) == [str(corrupt)]
    assert "Cannot read image file" in errors["error"][0] and corrupt.name in errors["error"][0]

    # --errors puts the list elsewhere; a resumed run tries the unreadable image again (and lists it again).
    elsewhere = tmp_path / "unreadable.csv"
    argv = ["predict", setup["model"], str(listed), "--output", str(output), "--resume", "--errors", str(elsewhere)]
    assert main(argv) == 0
    assert "0 images scored (40 already there); 1 unreadable" in capsys.readouterr().out
    assert list(pd.read_csv(elsewhere)["image"]) == [str(corrupt)]
    assert len(_read_output(output)) == 40


def test_strict_stops_at_the_first_unreadable_file_with_one_line(setup, resolved_reference, tmp_path, capsys):
    images = _small_images(setup)[:12]
    corrupt = tmp_path / "patient_0042.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    listed = tmp_path / "images.txt"
    listed.write_text("\n".join([*images[:6], str(corrupt), *images[6:]]) + "\n")
    output = tmp_path / "scores.csv"
    line = one_error_line(capsys, ["predict", setup["model"], str(listed), "--output", str(output), "--strict", *BATCH])
    assert line.startswith("cxr-vitmae predict: error: ") and "patient_0042.png" in line
    # The rows before the unreadable file are written, none after it, so --resume continues from there.
    _assert_rows_match(_read_output(output), images[:6], setup["labels"], resolved_reference)
    # Without --output the JSON path is strict as it always was: one line, nothing on stdout.
    line = one_error_line(capsys, ["predict", setup["model"], str(listed)])
    assert "patient_0042.png" in line


def test_options_that_need_an_output_file_or_a_known_format_are_refused_in_one_line(setup, tmp_path, capsys):
    image = _small_images(setup)[0]
    assert "--resume needs --output" in one_error_line(capsys, ["predict", setup["model"], image, "--resume"])
    line = one_error_line(capsys, ["predict", setup["model"], image, "--output", str(tmp_path / "scores.xlsx")])
    assert "scores.xlsx" in line and ".csv, .jsonl, .parquet" in line
    line = one_error_line(capsys, ["predict", setup["model"], image, "--output", str(tmp_path / "no" / "x.csv")])
    assert "does not exist" in line


@pytest.mark.parametrize("suffix", FORMATS)
def test_resume_cuts_a_half_written_last_line_and_refuses_another_models_file(
    setup, resolved_reference, tmp_path, capsys, suffix
):
    images = _small_images(setup)
    output = tmp_path / f"scores.{suffix}"
    rows = [(image, setup["reference"][image]) for image in images[:9]]
    # What a run killed during a write leaves: 9 rows written and flushed, the 9th cut short mid-line (for Parquet
    # in the part file, since the Parquet file itself is written when the run ends).
    writer = open_predictions(output, setup["labels"])
    writer.write(rows)
    (writer.part if suffix == "parquet" else writer).file.close()
    written = Path(f"{output}.part.jsonl") if suffix == "parquet" else output
    os.truncate(written, written.stat().st_size - 25)
    assert main(["predict", setup["model"], str(setup["archive"] / "small"), "--output", str(output), "--resume",
                 *BATCH]) == 0  # fmt: skip
    assert "32 images scored (8 already there)" in capsys.readouterr().out
    _assert_rows_match(_read_output(output), images, setup["labels"], resolved_reference)

    other = randomize_(ViTMAEForChestXray(tiny_vit_config(num_labels=3, id2label={0: "a", 1: "b", 2: "c"})))
    other.save_pretrained(tmp_path / "other-model")
    line = one_error_line(capsys, ["predict", str(tmp_path / "other-model"), images[0], "--output", str(output),
                                   "--resume"])  # fmt: skip
    assert str(output) in line and "another model" in line
    assert len(_read_output(output)) == 40  # untouched
    # The same labels, other weights: two models' scores in one file would look like one model's.
    retrained = ViTMAEForChestXray.from_pretrained(setup["model"])
    with torch.no_grad():
        retrained.classifier.bias.add_(0.5)
    retrained.save_pretrained(tmp_path / "retrained")
    line = one_error_line(capsys, ["predict", str(tmp_path / "retrained"), images[0], "--output", str(output),
                                   "--resume"])  # fmt: skip
    assert "another model" in line and len(_read_output(output)) == 40


def test_resume_knows_an_image_spelled_another_way(setup, tmp_path, capsys, monkeypatch):
    """Relative in one run, absolute in the next, or from another folder: each image still gets one row."""
    monkeypatch.chdir(setup["archive"])
    output = tmp_path / "scores.csv"
    assert main(["predict", setup["model"], "small/site0", "--output", str(output), *BATCH]) == 0
    first = len(_read_output(output))
    monkeypatch.chdir(tmp_path)
    assert main(["predict", setup["model"], str(setup["archive"] / "small"), "--output", str(output), "--resume",
                 *BATCH]) == 0  # fmt: skip
    assert f"{40 - first} images scored ({first} already there)" in capsys.readouterr().out
    frame = _read_output(output)
    assert len(frame) == 40 and b"\r\n" not in output.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_killed_run_resumes_with_exactly_one_row_per_image(setup, resolved_reference, tmp_path, suffix):
    output = tmp_path / f"scores.{suffix}"
    argv = [str(CONSOLE_SCRIPT), "predict", setup["model"], str(setup["archive"]), "--output", str(output),
            "--batch-size", "2", "--num-workers", "1"]  # fmt: skip
    # Rows land in the file (CSV) or the part file (Parquet) batch by batch; kill the process once a few are there.
    growing = Path(f"{output}.part.jsonl") if suffix == "parquet" else output
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if growing.exists() and growing.read_bytes().count(b"\n") >= 11:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    lines_left = growing.read_bytes().count(b"\n")
    assert 10 <= lines_left < 200  # some rows written, not all

    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "already there" in resumed.stdout
    everything = sorted(str(path) for path in setup["archive"].rglob("*.*"))
    frame = _read_output(output)
    _assert_rows_match(frame, everything, setup["labels"], resolved_reference)  # each once, in order, right scores

    # ... and the same rows as a run that was never interrupted.
    uninterrupted = tmp_path / f"uninterrupted.{suffix}"
    assert main(["predict", setup["model"], str(setup["archive"]), "--output", str(uninterrupted), *BATCH]) == 0
    reference = _read_output(uninterrupted)
    assert list(reference["image"]) == list(frame["image"])
    assert np.abs(reference[setup["labels"]].to_numpy() - frame[setup["labels"]].to_numpy()).max() <= TOLERANCE


# --- the custom pipeline ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classify(setup):
    from transformers import pipeline

    return pipeline("image-classification", model=setup["model"], trust_remote_code=True)


def _pipeline_scores(results) -> dict[str, float]:
    return {entry["label"]: entry["score"] for entry in results}


def _assert_pipeline_matches(results, image: str, setup) -> None:
    scores = _pipeline_scores(results)
    assert sorted(scores) == sorted(setup["labels"])  # every label of the multi-label model, by default
    reference = setup["reference"][image]
    assert max(abs(scores[label] - reference[label]) for label in scores) <= TOLERANCE


def test_pipeline_streams_iterators_iterables_and_datasets(setup, classify):
    import datasets

    images = _small_images(setup)[:6]
    for name, inputs in {
        "generator": (image for image in images),
        "iterator": iter(images),
        "iterable": pd.Series(images),
        "datasets.Dataset": datasets.Dataset.from_dict({"image": images}).cast_column("image", datasets.Image()),
        "dataset column": datasets.Dataset.from_dict({"path": images})["path"],
    }.items():
        results = classify(inputs, batch_size=2)
        assert not isinstance(results, list), name  # a lazy iterator, as stock gives for a generator
        for image, result in zip(images, results, strict=True):
            _assert_pipeline_matches(result, image, setup)

    # Lazy: an endless stream yields its first answers (stock would take the iterator itself for one image).
    first = list(itertools.islice(classify(itertools.cycle(images[:2])), 3))
    _assert_pipeline_matches(first[2], images[0], setup)
    # A list is still answered as a list, a single image as its labels.
    assert isinstance(classify(images[:2]), list)
    _assert_pipeline_matches(classify(images[0]), images[0], setup)


def test_pipeline_reads_dicom_from_a_dataset_image_column(setup, classify, tmp_path):
    import datasets
    from test_image_processor import write_dicom

    stored = np.round(np.linspace(0, 4095, 48 * 40).reshape(48, 40)).astype(np.uint16)
    dicom = write_dicom(tmp_path / "chest.dcm", stored, "MONOCHROME2")  # skips without pydicom
    expected = predict_images(*load_classifier(setup["model"]), decode_images([dicom]))[str(dicom)]
    # The pipeline reads the stored file itself: datasets would decode it with PIL, which opens no DICOM on its own.
    dataset = datasets.Dataset.from_dict({"scan": [str(dicom)]}).cast_column("scan", datasets.Image())
    (result,) = list(classify(dataset))
    scores = _pipeline_scores(result)
    assert max(abs(scores[label] - expected[label]) for label in scores) <= TOLERANCE
    with pytest.raises(ValueError, match="which column"):
        classify(datasets.Dataset.from_dict({"a": ["x"], "b": ["y"]}))


def test_pipeline_top_k_defaults_to_every_label_only_for_multi_label_models(setup, classify, tmp_path):
    from transformers import pipeline

    image = _small_images(setup)[0]
    assert len(classify(image)) == 14
    assert [entry["label"] for entry in classify(image, top_k=3)] == [
        entry["label"] for entry in classify(image)[:3]
    ]  # an explicit top_k wins, most probable first
    assert len(pipeline("image-classification", model=setup["model"], trust_remote_code=True, top_k=2)(image)) == 2

    single = randomize_(ViTMAEForChestXray(tiny_vit_config(num_labels=7, problem_type="single_label_classification")))
    single.save_pretrained(tmp_path / "single")
    results = pipeline("image-classification", model=str(tmp_path / "single"), trust_remote_code=True)(image)
    assert len(results) == 5  # stock's default
    assert sum(entry["score"] for entry in results) < 1.0


@pytest.mark.slow
def test_pipeline_without_the_package_streams_and_gives_every_label(setup):
    images = _small_images(setup)[:3]
    stdout = run_without_package(
        f"""
        import json
        from transformers import pipeline
        classify = pipeline("image-classification", model={setup["model"]!r}, trust_remote_code=True)
        results = classify(iter({images!r}))
        print(json.dumps({{"lazy": not isinstance(results, list), "results": list(results)}}))
        """,
        setup["root"],
    )
    answer = json.loads(stdout.strip().splitlines()[-1])
    assert answer["lazy"]
    for image, result in zip(images, answer["results"], strict=True):
        _assert_pipeline_matches(result, image, setup)
