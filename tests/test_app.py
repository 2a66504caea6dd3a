"""The Gradio app (app/app.py), served on 127.0.0.1 and used as a user would: through gradio_client, from the command
line, and rendered by headless Chromium. Every outbound connection attempt made while it runs is recorded."""

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

# Set before Gradio is imported. The app turns telemetry off itself; this also covers anything Gradio makes outside
# the app's Blocks. Uploads and outputs go to a throwaway cache instead of the machine-wide /tmp/gradio.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="cxr-vitmae-gradio-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from huggingface_hub import SpaceCard  # noqa: E402
from model_helpers import randomize_  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402
from PIL import Image  # noqa: E402
from test_image_processor import write_dicom  # noqa: E402
from transformers import AutoModelForImageClassification  # noqa: E402

from cxr_vitmae import NIH_CHESTXRAY14_LABELS, CXRViTMAEConfig, CXRViTMAEForPreTraining, load_radiograph  # noqa: E402
from cxr_vitmae.predict import decode_images, load_classifier, predict_images  # noqa: E402

gradio = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from cxr_vitmae.explain.gradcam import explain_image  # noqa: E402
from cxr_vitmae.explain.reconstruction import load_pretraining_model, reconstruction_panel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "app"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def load_app_module():
    """app/app.py is a script, not part of the package: import it from its file, as `python app/app.py` would run."""
    spec = importlib.util.spec_from_file_location("cxr_vitmae_app", APP_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app = load_app_module()


@pytest.fixture(scope="module")
def outbound():
    """Every non-loopback host this process resolves or connects to while the module's tests run (the app, Gradio's
    server threads and the client all share it); it must stay empty."""
    attempts: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and str(host) not in LOOPBACK:
            attempts.append(f"resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            attempts.append(f"connect {address}")
        return real_connect(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        patch.setattr(socket.socket, "connect", connect)
        yield attempts
    assert not attempts, f"the app or Gradio tried to reach the network: {attempts}"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny random MAE pre-training dir and a 14-label classifier made from it, as a user would make them, with
    random heads so that the label probabilities differ from each other."""
    root = tmp_path_factory.mktemp("models")
    # Not the default mask ratio, so that the app's starting value visibly comes from the model.
    config = CXRViTMAEConfig.from_preset("vit-tiny", image_size=32, patch_size=8, num_hidden_layers=2, mask_ratio=0.75)
    randomize_(CXRViTMAEForPreTraining(config)).save_pretrained(root / "mae")
    classifier = AutoModelForImageClassification.from_pretrained(
        root / "mae", num_labels=len(NIH_CHESTXRAY14_LABELS), id2label=dict(enumerate(NIH_CHESTXRAY14_LABELS))
    )
    randomize_(classifier).save_pretrained(root / "classifier")
    return {"classifier": root / "classifier", "mae": root / "mae"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(demo):
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, share=False)
    return demo


@pytest.fixture(scope="module")
def served(outbound, model_dirs):
    demo = serve(app.build_demo(model_dirs["classifier"], model_dirs["mae"], device="cpu"))
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    return gradio_client.Client(served.local_url, verbose=False, download_files=tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="module")
def classifier(model_dirs):
    return load_classifier(model_dirs["classifier"], "cpu")


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    """An 8-bit grayscale radiograph-like PNG, not square, so resize and crop both act."""
    rows, cols = np.mgrid[0:48, 0:40]
    noise = np.random.default_rng(0).integers(0, 40, size=rows.shape)
    pixels = (rows * 3 + np.abs(cols - 20) * 4 + noise).clip(0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("images") / "chest.png"
    Image.fromarray(pixels).save(path)
    return path


def analyse(client, path: Path, **inputs):
    """(label output, Grad-CAM update {"value": image path, "label": caption}, reconstruction image path or None,
    note) from the app's one endpoint; inputs left out take the values the page starts with."""
    return client.predict(path=gradio_client.handle_file(str(path)), **inputs, api_name="/analyse")


def probabilities_shown(label_output: dict) -> dict[str, float]:
    return {entry["label"]: entry["confidence"] for entry in label_output["confidences"]}


def expected_probabilities(classifier, path: Path) -> dict[str, float]:
    model, processor = classifier
    return predict_images(model, processor, decode_images([path]))[str(path)]


def pixels(image: str | Path | Image.Image) -> np.ndarray:
    if not isinstance(image, Image.Image):
        image = Image.open(image)
    return np.asarray(image.convert("RGB"))


def test_png_probabilities_equal_predict_and_explanations_equal_the_library(client, classifier, model_dirs, png):
    label_output, gradcam, reconstruction, note = analyse(client, png)

    expected = expected_probabilities(classifier, png)
    assert len(set(expected.values())) > 1, "a degenerate model would make this comparison vacuous"
    assert probabilities_shown(label_output) == pytest.approx(expected, abs=1e-6)
    assert label_output["label"] == max(expected, key=expected.get)

    model, processor = classifier
    image = load_radiograph(png)
    top = explain_image(model, processor, image)
    assert top.label == label_output["label"]
    assert gradcam["label"] == f"Grad-CAM: {top.label} (p = {expected[top.label]:.3f})"
    np.testing.assert_array_equal(pixels(gradcam["value"]), pixels(top.overlay))

    mae, mae_processor = load_pretraining_model(model_dirs["mae"], "cpu")
    panel = reconstruction_panel(mae, mae_processor, image, mask_ratio=0.75, seed=0)
    np.testing.assert_array_equal(pixels(reconstruction), pixels(panel))
    assert "75%" in note and "seed 0" in note and "anomaly" not in note


def test_chosen_label_mask_ratio_seed_and_anomaly_maskings_are_used(client, classifier, model_dirs, png):
    model, processor = classifier
    image = load_radiograph(png)
    top_label = explain_image(model, processor, image).label
    other = next(label for label in NIH_CHESTXRAY14_LABELS if label != top_label)

    _, gradcam, reconstruction, note = analyse(client, png, label=other, mask_ratio=0.5, seed=7, anomaly_maskings=3)

    assert gradcam["label"].startswith(f"Grad-CAM: {other} ")
    chosen = explain_image(model, processor, image, label=other).overlay
    np.testing.assert_array_equal(pixels(gradcam["value"]), pixels(chosen))
    mae, mae_processor = load_pretraining_model(model_dirs["mae"], "cpu")
    expected = reconstruction_panel(mae, mae_processor, image, mask_ratio=0.5, seed=7, anomaly_maskings=3)
    np.testing.assert_array_equal(pixels(reconstruction), pixels(expected))
    assert "50%" in note and "seed 7" in note and "3 maskings" in note


def test_a_mask_ratio_the_model_cannot_take_is_one_clear_error(client, png):
    # The tiny MAE has 16 patches: hiding 95 % of them would leave the encoder nothing to see.
    with pytest.raises(gradio_client.exceptions.AppError, match="mask_ratio 0.95"):
        analyse(client, png, mask_ratio=0.95)


def test_dicom_with_and_without_extension(client, classifier, tmp_path):
    pytest.importorskip("pydicom")
    stored = (np.add.outer(np.arange(64) * 40, np.arange(48) * 20) % 4096).astype(np.uint16)
    dicom = write_dicom(tmp_path / "chest.dcm", stored, "MONOCHROME2")
    expected = expected_probabilities(classifier, dicom)

    label_output, *_ = analyse(client, dicom)
    assert probabilities_shown(label_output) == pytest.approx(expected, abs=1e-6)

    # PACS exports often have no extension at all; the upload takes any file and the decoder finds the DICOM header.
    bare = tmp_path / "IM000001"
    shutil.copyfile(dicom, bare)
    label_output, *_ = analyse(client, bare)
    assert probabilities_shown(label_output) == pytest.approx(expected, abs=1e-6)


def test_unreadable_upload_is_one_clear_error(client, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not an image\n" * 20)
    with pytest.raises(gradio_client.exceptions.AppError, match=r"notes\.txt.*Cannot read"):
        analyse(client, junk)


def test_without_mae_model_the_reconstruction_says_why(outbound, model_dirs, classifier, png, tmp_path):
    demo = serve(app.build_demo(model_dirs["classifier"], device="cpu"))
    try:
        client = gradio_client.Client(demo.local_url, verbose=False, download_files=tmp_path)
        label_output, gradcam, reconstruction, note = analyse(client, png)
    finally:
        demo.close()
    assert probabilities_shown(label_output) == pytest.approx(expected_probabilities(classifier, png), abs=1e-6)
    assert Path(gradcam["value"]).is_file() and reconstruction is None
    assert "--mae-model" in note and "CXR_MAE_MODEL" in note


def test_models_of_the_wrong_kind_are_refused_at_start_up(model_dirs):
    with pytest.raises(ValueError, match="no MAE decoder"):
        app.build_demo(model_dirs["classifier"], model_dirs["classifier"], device="cpu")
    with pytest.raises(ValueError, match="not an image classifier"):
        app.build_demo(model_dirs["mae"], device="cpu")


def test_page_renders_in_headless_chromium(served, tmp_path):
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        pytest.skip(f"no browser found ({', '.join(BROWSERS)})")
    offline = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Everything but the app's own server resolves to nothing, so the page cannot load anything from outside.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--disable-background-networking",
        "--no-first-run",
        "--virtual-time-budget=15000",
    ]
    screenshot = tmp_path / "app.png"
    subprocess.run(
        [browser, *offline, f"--screenshot={screenshot}", "--window-size=1280,1024", served.local_url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(screenshot) as shot:
        assert shot.size == (1280, 1024)
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
    # A blank or error page has a handful of colours; rendered text, icons and component frames have hundreds.
    assert len(colours) > 100, f"only {len(colours)} colours: the page looks blank"

    dom = subprocess.run(
        [browser, *offline, "--dump-dom", served.local_url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    # The served HTML carries the component config as JSON; only Gradio's JavaScript turns it into elements.
    assert 'id="probabilities"' in dom and 'id="radiograph"' in dom


def test_command_line_and_space_variables_with_one_line_errors(outbound, model_dirs, monkeypatch, capsys):
    monkeypatch.delenv("CXR_MODEL", raising=False)
    monkeypatch.delenv("CXR_MAE_MODEL", raising=False)
    with pytest.raises(SystemExit) as missing:
        app.main([])
    assert missing.value.code == 2 and "--model is required (or set CXR_MODEL)" in capsys.readouterr().err

    # sys.exit(message) is how main reports a bad model: Python prints the message to stderr and exits with 1.
    monkeypatch.setenv("CXR_MODEL", "nobody/no-such-model")  # not a directory: tried as a Hub repo id, offline
    with pytest.raises(SystemExit) as unknown:
        app.main([])
    assert "\n" not in unknown.value.code
    assert unknown.value.code.startswith("app.py: error: 'nobody/no-such-model' is not a local model directory")

    monkeypatch.setenv("CXR_MODEL", str(model_dirs["classifier"]))
    monkeypatch.setenv("CXR_MAE_MODEL", str(model_dirs["classifier"]))
    with pytest.raises(SystemExit) as wrong_kind:
        app.main([])
    assert "\n" not in wrong_kind.value.code and "has no MAE decoder" in wrong_kind.value.code


def test_space_metadata_and_requirements():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    card = SpaceCard.load(APP_DIR / "README.md")
    assert card.data.sdk == "gradio"
    assert (APP_DIR / card.data.app_file).is_file()
    # The Space runs the Gradio major version this suite tests the app with.
    assert Version(card.data.sdk_version).major == Version(gradio.__version__).major
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert card.data.license == project["license"].lower()
    assert {"medical-imaging", "chest-x-ray"} <= set(card.data.tags)

    lines = (APP_DIR / "requirements.txt").read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    package = next(requirement for requirement in requirements if requirement.name == project["name"])
    assert package.extras <= set(project["optional-dependencies"])
    # What the app imports beyond the core package: pydicom (DICOM uploads) and pytorch-grad-cam.
    assert {"dicom", "explain"} <= package.extras
