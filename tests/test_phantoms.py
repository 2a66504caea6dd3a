"""The synthetic phantom corpus: NIH ChestX-ray14's exact on-disk format, deterministic, with findings that are drawn
where their labels and boxes say."""

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_vitmae.data.nih import DATA_ENTRY_COLUMNS
from cxr_vitmae.data.phantoms import (
    BBOX_HEADER,
    BOX_LABELS,
    DATA_ENTRY_HEADER,
    DIFFICULTY,
    DIFFICULTY_CHOICES,
    PHANTOM_RECORD,
    TEST_FRACTION,
    generate_phantoms,
    phantom_record,
    resolve_difficulty,
)
from cxr_vitmae.data.phantoms.plan import plan_corpus
from cxr_vitmae.data.phantoms.render import render
from cxr_vitmae.models.chest_xray_labels import NIH_CHESTXRAY14_LABELS

SIZE = 96
NUM_IMAGES = 400
BOX_FILE_NAMES = {"Infiltration": "Infiltrate"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # "easy" so that every finding is drawn well above the noise: the drawing tests compare pixels.
    return generate_phantoms(tmp_path_factory.mktemp("phantoms"), NUM_IMAGES, size=SIZE, seed=3, difficulty="easy")


@pytest.fixture(scope="module")
def data_entry(corpus):
    return pd.read_csv(corpus.output_dir / "Data_Entry_2017.csv")


@pytest.fixture(scope="module")
def box_table(corpus):
    return pd.read_csv(corpus.output_dir / "BBox_List_2017.csv")


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text
    return text.splitlines()


def test_layout_and_images(corpus):
    root = corpus.output_dir
    for name in ("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt", "BBox_List_2017.csv"):
        assert (root / name).is_file()
    written = sorted(path.name for path in (root / "images").iterdir())
    assert written == [image.file_name for image in corpus.images]
    assert len(written) == NUM_IMAGES
    for name in written[:: NUM_IMAGES // 20]:
        with Image.open(root / "images" / name) as image:
            assert image.format == "PNG" and image.mode == "L" and image.size == (SIZE, SIZE)
            pixels = np.asarray(image)
        # a radiograph, not a blank: dark background, bright mediastinum
        assert pixels.min() < 60 and pixels.max() > 180


def test_data_entry_reads_like_nih(corpus, data_entry):
    assert _lines(corpus.output_dir / "Data_Entry_2017.csv")[0] == DATA_ENTRY_HEADER
    # what pandas makes of NIH's header: the commas inside the last two names split them
    assert list(data_entry.columns) == list(DATA_ENTRY_COLUMNS)
    assert not data_entry.isna().any().any()
    assert data_entry["Image Index"].tolist() == [image.file_name for image in corpus.images]
    for column in ("Follow-up #", "Patient ID", "Patient Age", "OriginalImage[Width", "Height]"):
        assert pd.api.types.is_integer_dtype(data_entry[column]), column
    for column in ("OriginalImagePixelSpacing[x", "y]"):
        assert pd.api.types.is_float_dtype(data_entry[column]), column
    assert set(data_entry["View Position"]) == {"PA", "AP"}
    assert set(data_entry["Patient Gender"]) == {"M", "F"}
    assert data_entry["Patient Age"].between(0, 95).all()


def test_finding_labels_are_nih_strings(data_entry):
    known = set(NIH_CHESTXRAY14_LABELS)
    for cell in data_entry["Finding Labels"]:
        parts = cell.split("|")
        if "No Finding" in parts:
            assert parts == ["No Finding"]
        else:
            assert set(parts) <= known and len(set(parts)) == len(parts), cell


def test_recorded_metadata_equals_the_files(corpus, data_entry):
    records = corpus.by_file_name()
    for row in data_entry.itertuples(index=False):
        name, findings, follow_up, patient, _, gender, view = row[:7]
        record = records[name]
        expected = [] if findings == "No Finding" else findings.split("|")
        assert list(record.labels) == [float(label in expected) for label in NIH_CHESTXRAY14_LABELS]
        assert record.finding_labels == findings
        # file name PPPPPPPP_FFF.png agrees with the Patient ID and Follow-up # columns
        assert name == f"{patient:08d}_{follow_up:03d}.png" and record.patient_id == f"{patient:08d}"
        assert (record.follow_up, record.view, record.gender) == (follow_up, view, gender)
    assert corpus.labels_array().shape == (NUM_IMAGES, 14)
    assert corpus.label_names == NIH_CHESTXRAY14_LABELS


def test_split_lists_are_patient_disjoint_and_cover_every_image(corpus):
    train_val = _lines(corpus.output_dir / "train_val_list.txt")
    test = _lines(corpus.output_dir / "test_list.txt")
    assert train_val == corpus.train_val_files and test == corpus.test_files
    assert sorted(train_val + test) == [image.file_name for image in corpus.images]
    assert len(set(train_val + test)) == NUM_IMAGES

    def patients(names):
        return {name.split("_")[0] for name in names}

    assert not patients(train_val) & patients(test)
    assert 0.15 < len(test) / NUM_IMAGES < 0.32  # NIH: 25,596 / 112,120 = 22.8 %


def test_patients_have_follow_ups(data_entry):
    per_patient = data_entry.groupby("Patient ID")["Follow-up #"].apply(sorted)
    for follow_ups in per_patient:
        assert follow_ups == list(range(len(follow_ups)))
    sizes = per_patient.apply(len)
    assert sizes.max() >= 4
    assert (sizes[sizes > 1].sum()) > 0.7 * NUM_IMAGES
    assert 2.0 < NUM_IMAGES / len(sizes) < 5.0


def test_box_file_reads_like_nih(corpus, box_table):
    assert _lines(corpus.output_dir / "BBox_List_2017.csv")[0] == BBOX_HEADER
    columns = list(box_table.columns)
    assert columns[:6] == ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    assert len(columns) == 9 and all(name.startswith("Unnamed") for name in columns[6:])
    assert box_table.iloc[:, 6:].isna().all().all()
    assert len(box_table) > 20
    assert set(box_table["Finding Label"]) <= {BOX_FILE_NAMES.get(label, label) for label in BOX_LABELS}
    assert "Infiltration" not in set(box_table["Finding Label"])


def test_boxes_only_on_test_images_inside_and_on_their_findings(corpus, box_table):
    test = set(corpus.test_files)
    records = corpus.by_file_name()
    spelled = {BOX_FILE_NAMES.get(label, label): label for label in BOX_LABELS}
    written = {}
    for name, label, x, y, w, h in box_table.iloc[:, :6].itertuples(index=False):
        assert name in test
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= SIZE and y + h <= SIZE
        assert spelled[label] in records[name].findings
        written.setdefault(name, []).append((spelled[label], x, y, w, h))
    recorded = {
        image.file_name: [(box.label, box.x, box.y, box.w, box.h) for box in image.boxes]
        for image in corpus.images
        if image.boxes
    }
    assert written == recorded
    assert all(not image.boxes for image in corpus.images if image.split == "train_val")
    # every box-file finding on a test image got its box
    for name in test:
        boxed = {box[0] for box in written.get(name, [])}
        assert boxed == set(records[name].findings) & set(BOX_LABELS)


@pytest.mark.slow
def test_prevalence_and_co_occurrence(corpus):
    counts = Counter(label for image in corpus.images for label in image.findings)
    no_finding = sum(not image.findings for image in corpus.images) / NUM_IMAGES
    assert 0.35 < no_finding < 0.65
    assert counts["Infiltration"] in sorted(counts.values())[-3:]
    assert counts["Hernia"] <= min(counts[label] for label in NIH_CHESTXRAY14_LABELS if label != "Hernia")
    # co-occurrence on a large plan (labels only, nothing rendered): heart failure and infection clusters
    plan = [set(spec.findings) for spec in plan_corpus(20_000, 0)]

    def rate(label, given=None):
        pool = [findings for findings in plan if given is None or given in findings]
        return sum(label in findings for findings in pool) / len(pool)

    assert rate("Effusion", "Cardiomegaly") > 2 * rate("Effusion")
    assert rate("Infiltration", "Pneumonia") > 2 * rate("Infiltration")
    rates = {label: rate(label) for label in NIH_CHESTXRAY14_LABELS}
    assert max(rates, key=rates.get) == "Infiltration" and min(rates, key=rates.get) == "Hernia"
    assert 0.5 < sum(not findings for findings in plan) / len(plan) < 0.58  # NIH: 53.8 % No Finding


# brighter where fluid, tissue or a bigger heart replaces lung air; darker where air collects
_DIRECTION = {label: 1.0 for label in BOX_LABELS} | {"Pneumothorax": -1.0}


def test_findings_are_drawn_inside_their_boxes(corpus):
    """Re-render each boxed image without the boxed finding (every other random draw unchanged): the pixels change
    in the direction the finding should move them, and almost only inside its box."""
    specs = {spec.file_name: spec for spec in plan_corpus(NUM_IMAGES, corpus.seed)}
    checked = Counter()
    for image in corpus.images:
        for label in {box.label for box in image.boxes}:
            if checked[label] >= 4:
                continue
            checked[label] += 1
            spec = specs[image.file_name]
            with Image.open(corpus.output_dir / "images" / image.file_name) as written:
                drawn = np.asarray(written, dtype=np.float64)
            rendered, _ = render(spec, SIZE, corpus.difficulty, corpus.seed)
            assert np.array_equal(rendered, drawn)
            without, _ = render(spec, SIZE, corpus.difficulty, corpus.seed, without=frozenset({label}))
            difference = drawn - without
            inside = np.zeros(difference.shape, bool)
            for box in image.boxes:
                if box.label == label:
                    inside[int(box.y) : int(box.y + box.h), int(box.x) : int(box.x + box.w)] = True
            assert _DIRECTION[label] * difference[inside].mean() > 0.5, label
            if label != "Atelectasis":  # its volume loss also raises the hemidiaphragm, outside the box
                assert np.abs(difference[inside]).sum() > 0.8 * np.abs(difference).sum(), label
    assert set(checked) == set(BOX_LABELS)


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    def files(root):
        return {path.relative_to(root): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}

    first = files(generate_phantoms(tmp_path / "a", 40, size=64, seed=11).output_dir)
    second = files(generate_phantoms(tmp_path / "b", 40, size=64, seed=11).output_dir)
    other = files(generate_phantoms(tmp_path / "c", 40, size=64, seed=12).output_dir)
    assert first == second
    assert len(first) == 40 + 4 + 1  # images, NIH's four files, the generator's record
    assert first[Path("Data_Entry_2017.csv")] != other[Path("Data_Entry_2017.csv")]
    assert first[Path("images/00000001_000.png")] != other[Path("images/00000001_000.png")]


def test_difficulty_changes_pixels_not_labels(tmp_path):
    easy = generate_phantoms(tmp_path / "easy", 12, size=64, seed=5, difficulty="easy")
    hard = generate_phantoms(tmp_path / "hard", 12, size=64, seed=5, difficulty=0.9)
    assert [image.labels for image in easy.images] == [image.labels for image in hard.images]
    assert (easy.output_dir / "Data_Entry_2017.csv").read_bytes() == (
        hard.output_dir / "Data_Entry_2017.csv"
    ).read_bytes()
    name = easy.images[0].file_name
    assert (easy.output_dir / "images" / name).read_bytes() != (hard.output_dir / "images" / name).read_bytes()
    # harder films are noisier: compare the background (air outside the body) at the image corners
    noise = [np.asarray(Image.open(c.output_dir / "images" / name))[:8, :8].std() for c in (easy, hard)]
    assert noise[1] > noise[0]


def test_variation_spreads_the_films_apart_and_one_is_todays_corpus(tmp_path):
    default = generate_phantoms(tmp_path / "default", 24, size=64, seed=5)
    explicit = generate_phantoms(tmp_path / "one", 24, size=64, seed=5, variation=1.0)
    varied = generate_phantoms(tmp_path / "varied", 24, size=64, seed=5, variation=3.0)
    for path in sorted(default.output_dir.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (explicit.output_dir / path.relative_to(default.output_dir)).read_bytes()
    assert [image.labels for image in varied.images] == [image.labels for image in default.images]
    assert phantom_record(varied.output_dir)["variation"] == 3.0 and "variation" not in phantom_record(tmp_path / "one")

    def spread_between_films(corpus):  # each pixel's standard deviation across the corpus's images, averaged
        stack = [np.asarray(Image.open(corpus.output_dir / "images" / image.file_name)) for image in corpus.images]
        return np.stack(stack).astype(np.float32).std(axis=0).mean()

    assert spread_between_films(varied) > 1.2 * spread_between_films(default)
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="variation"):
            generate_phantoms(tmp_path / "bad", 2, size=32, variation=bad)


def test_test_fraction_moves_whole_patients_to_the_test_list_and_the_default_is_nihs(tmp_path):
    default = generate_phantoms(tmp_path / "default", 300, size=32, seed=4)
    explicit = generate_phantoms(tmp_path / "nih", 300, size=32, seed=4, test_fraction=TEST_FRACTION)
    for path in sorted(default.output_dir.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (explicit.output_dir / path.relative_to(default.output_dir)).read_bytes()
    assert "test_fraction" not in phantom_record(explicit.output_dir)

    large = generate_phantoms(tmp_path / "large", 300, size=32, seed=4, test_fraction=0.6)
    assert phantom_record(large.output_dir)["test_fraction"] == 0.6
    for corpus, share in ((default, TEST_FRACTION), (large, 0.6)):
        # whole patients are added until the share is reached: at most one patient's follow-ups (12) past it
        assert round(share * 300) <= len(corpus.test_files) <= round(share * 300) + 11
        listed = (corpus.output_dir / "test_list.txt").read_text().split()
        assert listed == corpus.test_files
        test_patients = {image.patient_id for image in corpus.images if image.split == "test"}
        assert not test_patients & {image.patient_id for image in corpus.images if image.split == "train_val"}
    for bad in (0, 1, -0.1, float("nan")):
        with pytest.raises(ValueError, match="test_fraction"):
            generate_phantoms(tmp_path / "bad", 20, size=32, test_fraction=bad)
    # a share that leaves the reader too few patients to carve validation from is refused before anything is written
    with pytest.raises(ValueError, match=r"test_fraction=0.999 leaves 1 patient\(s\) in train_val_list.txt"):
        generate_phantoms(tmp_path / "tiny", 30, size=32, test_fraction=0.999)
    assert not (tmp_path / "tiny").exists()


def test_arguments(tmp_path):
    assert DIFFICULTY in DIFFICULTY_CHOICES
    assert resolve_difficulty("easy") < resolve_difficulty("medium") < resolve_difficulty("hard")
    assert resolve_difficulty(0.3) == 0.3
    for bad in ("impossible", 1.5, -0.1):
        with pytest.raises(ValueError, match="difficulty"):
            resolve_difficulty(bad)
    with pytest.raises(ValueError, match="num_images"):
        generate_phantoms(tmp_path, 0)
    single = generate_phantoms(tmp_path / "one", 1, size=32)
    assert single.train_val_files == ["00000001_000.png"] and single.test_files == []
    few = generate_phantoms(tmp_path / "few", 3, size=32, progress=True)
    assert few.train_val_files and few.test_files
    # rewriting the same corpus is fine; a directory holding another corpus's images is refused, not cleaned
    generate_phantoms(tmp_path / "few", 3, size=32)
    with pytest.raises(ValueError, match="not part of this corpus"):
        generate_phantoms(tmp_path / "few", 2, size=32)


def test_the_corpus_records_that_it_is_synthetic(corpus, tmp_path):
    assert phantom_record(corpus.output_dir) == {
        "generator": "cxr-vitmae phantoms",
        "num_images": NUM_IMAGES,
        "size": SIZE,
        "seed": corpus.seed,
        "difficulty": corpus.difficulty,
    }
    assert phantom_record(tmp_path) is None and phantom_record(None) is None
    (tmp_path / PHANTOM_RECORD).write_text('{"generator": "something else"}')
    with pytest.raises(ValueError, match=PHANTOM_RECORD):
        phantom_record(tmp_path)
