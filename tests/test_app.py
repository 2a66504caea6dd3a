"""The Gradio app (app/app.py), served on 127.0.0.1 and used as a user would: through gradio_client, from the command
line, and in headless Chromium (an upload, then a screenshot). Every outbound connection attempt made while it runs is
recorded."""

import importlib.util
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

# Set before Gradio is imported. The app turns telemetry off itself; this also covers anything Gradio makes outside
# the app's Blocks. Uploads and outputs go to a throwaway cache instead of the machine-wide /tmp/gradio.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="cxr-vitmae-gradio-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from browser import BROWSERS, Chromium, find_browser  # noqa: E402
from huggingface_hub import SpaceCard  # noqa: E402
from model_helpers import randomize_  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402
from PIL import Image  # noqa: E402
from ports import free_port  # noqa: E402
from test_image_processor import write_dicom  # noqa: E402
from transformers import AutoModelForImageClassification  # noqa: E402

from cxr_vitmae import NIH_CHESTXRAY14_LABELS, CXRViTMAEConfig, CXRViTMAEForPreTraining, load_radiograph  # noqa: E402
from cxr_vitmae.predict import decode_images, load_classifier, predict_images  # noqa: E402

gradio = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from cxr_vitmae.evaluation.figures import PANEL_PIXELS, panels_image  # noqa: E402
from cxr_vitmae.explain.gradcam import explain_image, gradcam_panels  # noqa: E402
from cxr_vitmae.explain.reconstruction import (  # noqa: E402
    load_pretraining_model,
    reconstruction_panels,
    reconstruction_views,
)

pytestmark = pytest.mark.slow  # a served app, its client and a browser

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "app"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
OUTPUTS = ("Uploaded radiograph (as decoded)", "Label probabilities", "Grad-CAM", "MAE reconstruction",
           "Reconstruction note")  # fmt: skip


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


def analyse(client, path: Path | None, **inputs) -> dict:
    """The app's one endpoint, by output name; inputs left out take the values the page starts with."""
    upload = None if path is None else gradio_client.handle_file(str(path))
    return dict(zip(OUTPUTS, client.predict(path=upload, **inputs, api_name="/analyse"), strict=True))


def probabilities_shown(chart: dict) -> dict[str, float]:
    assert chart["columns"] == ["label", "probability"] and chart["mark"] == "bar"
    return dict(chart["data"])


def expected_probabilities(classifier, path: Path) -> dict[str, float]:
    model, processor = classifier
    return predict_images(model, processor, decode_images([path]))[str(path)]


def pixels(image: str | Path | Image.Image) -> np.ndarray:
    if not isinstance(image, Image.Image):
        image = Image.open(image)
    return np.asarray(image.convert("RGB"))


def assert_figure(path: str, panels: list, title: str, n_panels: int) -> None:
    """The app's figure is exactly the library's (`panels_image`, which `plot_panels` writes for the CLI): n titled
    panels of at least PANEL_PIXELS a side, under a title."""
    assert len(panels) == n_panels and title
    expected = panels_image(panels, title=title)
    np.testing.assert_array_equal(pixels(path), pixels(expected))
    assert expected.width >= n_panels * PANEL_PIXELS and expected.height >= PANEL_PIXELS


def test_an_upload_shows_the_input_every_probability_and_the_library_figures(client, classifier, model_dirs, png):
    shown = analyse(client, png)

    # The input, as decoded (an 8-bit PNG comes back as it is).
    np.testing.assert_array_equal(pixels(shown["Uploaded radiograph (as decoded)"]), pixels(png))

    # Every label's probability, most probable first: no single headline label.
    expected = expected_probabilities(classifier, png)
    assert len(set(expected.values())) > 1, "a degenerate model would make this comparison vacuous"
    chart = shown["Label probabilities"]
    assert probabilities_shown(chart) == pytest.approx(expected, abs=1e-6)
    assert [label for label, _ in chart["data"]] == sorted(expected, key=expected.get, reverse=True)

    model, processor = classifier
    image = load_radiograph(png)
    top = explain_image(model, processor, image)
    panels, title = gradcam_panels(top, "classifier")
    assert title == f"classifier: {top.label}, p = {expected[top.label]:.3f}"
    assert_figure(shown["Grad-CAM"], panels, title, 2)

    mae, mae_processor = load_pretraining_model(model_dirs["mae"], "cpu")
    views = reconstruction_views(mae, mae_processor, image, mask_ratio=0.75, seed=0)
    assert_figure(shown["MAE reconstruction"], *reconstruction_panels(views, "mae", 0.75, 0), 4)
    note = shown["Reconstruction note"]
    assert "75%" in note and "seed 0" in note and "anomaly" not in note


def test_chosen_label_mask_ratio_seed_and_anomaly_maskings_are_used(client, classifier, model_dirs, png):
    model, processor = classifier
    image = load_radiograph(png)
    top_label = explain_image(model, processor, image).label
    other = next(label for label in NIH_CHESTXRAY14_LABELS if label != top_label)

    shown = analyse(client, png, label=other, mask_ratio=0.5, seed=7, anomaly_maskings=3)

    chosen = explain_image(model, processor, image, label=other)
    assert_figure(shown["Grad-CAM"], *gradcam_panels(chosen, "classifier"), 2)
    mae, mae_processor = load_pretraining_model(model_dirs["mae"], "cpu")
    views = reconstruction_views(mae, mae_processor, image, mask_ratio=0.5, seed=7, anomaly_maskings=3)
    assert_figure(shown["MAE reconstruction"], *reconstruction_panels(views, "mae", 0.5, 7, 3), 5)
    note = shown["Reconstruction note"]
    assert "50%" in note and "seed 7" in note and "3 maskings" in note


def test_the_api_names_every_input_and_output(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert list(api) == ["/analyse"]  # the page's own events (upload, examples) are not part of the API
    assert [output["label"] for output in api["/analyse"]["returns"]] == list(OUTPUTS)
    parameters = [parameter["parameter_name"] for parameter in api["/analyse"]["parameters"]]
    assert parameters == ["path", "label", "mask_ratio", "seed", "anomaly_maskings"]


def test_example_phantoms_are_named_for_their_finding_and_analysable(client, classifier, tmp_path):
    examples = app.write_examples(tmp_path)
    names = [path.name for path, _ in examples]
    assert names[0] == "synthetic-phantom-no-finding.png" and len(names) >= 3
    assert all(name.startswith("synthetic-phantom-") for name in names)
    # Only the examples are left: the phantom corpus they were drawn from is removed.
    assert set(tmp_path.iterdir()) == {path for path, _ in examples}
    for path, caption in examples:
        finding = caption.removeprefix("Synthetic phantom: ")
        assert finding.lower().replace(" ", "-") in path.name
    with Image.open(examples[1][0]) as phantom:
        assert phantom.size == (512, 512) and phantom.mode == "L"
    shown = analyse(client, examples[1][0])
    assert probabilities_shown(shown["Label probabilities"]) == pytest.approx(
        expected_probabilities(classifier, examples[1][0]), abs=1e-6
    )
    np.testing.assert_array_equal(pixels(shown["Uploaded radiograph (as decoded)"]), pixels(examples[1][0]))


def test_the_page_offers_the_examples(served, client, tmp_path):
    examples = [block for block in served.config["components"] if block.get("props", {}).get("elem_id") == "examples"]
    assert len(examples) == 1
    props = examples[0]["props"]
    assert props["sample_labels"][0] == "Synthetic phantom: No Finding" and len(props["sample_labels"]) >= 3
    assert props["samples"][1] == ["synthetic-phantom-effusion.png"]
    # Clicking an example fills the upload with that phantom (the page's own event; not in the documented API).
    loaded = client.predict(1, api_name="/load_example")["value"]
    (expected,) = [path for path, _ in app.write_examples(tmp_path) if path.name == "synthetic-phantom-effusion.png"]
    assert Path(loaded).name == expected.name and Path(loaded).read_bytes() == expected.read_bytes()


def test_a_large_upload_is_shown_at_most_1024_px(client, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray((np.add.outer(np.arange(2048), np.arange(1536)) % 256).astype(np.uint8)).save(big)
    with Image.open(analyse(client, big)["Uploaded radiograph (as decoded)"]) as shown:
        assert shown.size == (768, 1024)


def test_a_mask_ratio_the_model_cannot_take_is_one_clear_error(client, png):
    # The tiny MAE has 16 patches: hiding 95 % of them would leave the encoder nothing to see.
    with pytest.raises(gradio_client.exceptions.AppError, match="mask_ratio 0.95"):
        analyse(client, png, mask_ratio=0.95)


def test_dicom_with_and_without_extension(client, classifier, tmp_path):
    pytest.importorskip("pydicom")
    stored = (np.add.outer(np.arange(64) * 40, np.arange(48) * 20) % 4096).astype(np.uint16)
    dicom = write_dicom(tmp_path / "chest.dcm", stored, "MONOCHROME2")
    expected = expected_probabilities(classifier, dicom)

    shown = analyse(client, dicom)
    assert probabilities_shown(shown["Label probabilities"]) == pytest.approx(expected, abs=1e-6)
    decoded = np.round(load_radiograph(dicom) * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels(shown["Uploaded radiograph (as decoded)"])[..., 0], decoded)

    # PACS exports often have no extension at all; the upload takes any file and the decoder finds the DICOM header.
    bare = tmp_path / "IM000001"
    shutil.copyfile(dicom, bare)
    shown = analyse(client, bare)
    assert probabilities_shown(shown["Label probabilities"]) == pytest.approx(expected, abs=1e-6)


def test_unreadable_upload_is_one_clear_error(client, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not an image\n" * 20)
    with pytest.raises(gradio_client.exceptions.AppError, match=r"notes\.txt.*Cannot read"):
        analyse(client, junk)
    with pytest.raises(gradio_client.exceptions.AppError, match="Upload a radiograph first"):
        analyse(client, None)


def test_clearing_the_upload_clears_the_results(client):
    # The page's own event on a new or cleared file (not documented in the API, but callable).
    cleared = client.predict(None, "", 0.75, 0, 0, api_name="/analyse_upload")
    assert list(cleared) == [None, None, None, None, ""]


def test_without_mae_model_the_reconstruction_says_why(outbound, model_dirs, classifier, png, tmp_path):
    demo = serve(app.build_demo(model_dirs["classifier"], device="cpu"))
    try:
        client = gradio_client.Client(demo.local_url, verbose=False, download_files=tmp_path)
        shown = analyse(client, png)
    finally:
        demo.close()
    assert probabilities_shown(shown["Label probabilities"]) == pytest.approx(
        expected_probabilities(classifier, png), abs=1e-6
    )
    assert Path(shown["Grad-CAM"]).is_file() and shown["MAE reconstruction"] is None
    assert "--mae-model" in shown["Reconstruction note"] and "CXR_MAE_MODEL" in shown["Reconstruction note"]


def chart_caption(demo) -> str:
    (chart,) = [
        block for block in demo.config["components"] if block.get("props", {}).get("elem_id") == "probabilities"
    ]
    return chart["props"]["caption"]


def test_the_chart_says_multi_label_probabilities_are_independent_and_softmax_ones_add_up(served, model_dirs, tmp_path):
    assert "independent" in chart_caption(served) and "no single bar is the diagnosis" in chart_caption(served)

    # A single-label model (COVIDx-like): a softmax over its classes, said as such.
    covid = ("normal", "pneumonia", "COVID-19")
    single = AutoModelForImageClassification.from_pretrained(
        model_dirs["mae"], num_labels=3, id2label=dict(enumerate(covid)), problem_type="single_label_classification"
    )
    single.save_pretrained(tmp_path / "single")
    assert "softmax over the 3 classes" in chart_caption(app.build_demo(tmp_path / "single", device="cpu"))


def test_models_of_the_wrong_kind_are_refused_at_start_up(model_dirs):
    with pytest.raises(ValueError, match="no MAE decoder"):
        app.build_demo(model_dirs["classifier"], model_dirs["classifier"], device="cpu")
    with pytest.raises(ValueError, match="not an image classifier"):
        app.build_demo(model_dirs["mae"], device="cpu")


# What the page shows once an upload is analysed, measured in the browser: each output's box on the page, and what
# is in it (the images' own sizes, the chart's bars and axis labels).
PAGE_STATE = """(() => {
  const box = (selector) => {
    const element = document.querySelector(selector);
    if (!element) return null;
    const r = element.getBoundingClientRect();
    return {x: r.x, y: r.y, width: r.width, height: r.height};
  };
  const image = (id) => {
    const img = document.querySelector(`#${id} img`);
    return img && img.complete && img.naturalWidth > 0
      ? {box: box(`#${id} img`), width: img.naturalWidth, height: img.naturalHeight} : null;
  };
  const chart = document.querySelector('#probabilities svg');
  // Vega draws each bar as a path in a rect-mark group (a selection brush, were there one, is a rect mark too).
  const bars = chart ? [...chart.querySelectorAll('g.mark-rect path')]
    .filter((bar) => !bar.closest('g.mark-rect').getAttribute('class').includes('brush')) : [];
  return {
    input: image('input-image'), gradcam: image('gradcam'), reconstruction: image('reconstruction'),
    chart: chart && {box: box('#probabilities svg'), bars: bars.length,
                     texts: [...chart.querySelectorAll('text')].map((t) => t.textContent),
                     described: bars.map((bar) => bar.getAttribute('aria-label') || '')},
  };
})()"""
READY = (
    f"(() => {{ const s = {PAGE_STATE}; return !!(s.input && s.gradcam && s.reconstruction && s.chart "
    "&& s.chart.bars > 0); })()"
)


def crop(shot: Image.Image, box: dict) -> np.ndarray:
    x, y = max(int(box["x"]), 0), max(int(box["y"]), 0)
    return np.asarray(shot)[y : y + int(box["height"]), x : x + int(box["width"])].astype(int)


def coloured(region: np.ndarray) -> int:
    """How many pixels are clearly coloured (not gray, white or black)."""
    return int((region.max(axis=-1) - region.min(axis=-1) > 60).sum())


def test_page_after_an_upload_in_headless_chromium(served, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip(
            f"no browser found ({', '.join(BROWSERS)}); none can be installed from PyPI. On Debian: "
            "apt-get install chromium"
        )
    offline = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Everything but the app's own server resolves to nothing, so the page cannot load anything from outside.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--disable-background-networking",
        "--no-first-run",
    ]
    radiograph = app.write_examples(tmp_path / "examples")[1][0]  # a 512-px phantom with one finding
    chromium = Chromium(browser, offline)
    try:
        # Tall enough that the whole page is in the viewport: element boxes are screenshot coordinates.
        chromium.open(served.local_url, 1280, 2400)
        chromium.wait_for("!!document.querySelector('#radiograph input[type=file]')")
        chromium.upload("#radiograph input[type=file]", radiograph)  # the page analyses a new file at once
        chromium.wait_for(READY)
        time.sleep(1)  # the chart's and images' last layout pass
        state = chromium.evaluate(PAGE_STATE)
        shot = chromium.screenshot()
    finally:
        chromium.close()
    shot.save(tmp_path / "app.png")

    # In the DOM: the decoded input at its own size, a bar and an axis label for every label, and the figures at
    # the library's size (panels of at least 384 px).
    assert (state["input"]["width"], state["input"]["height"]) == (512, 512)
    assert state["chart"]["bars"] == len(NIH_CHESTXRAY14_LABELS)
    # Every label is named on the chart: as an axis label or, where Vega thins crowded axis labels, in its bar's
    # description.
    named = " ".join(state["chart"]["texts"] + state["chart"]["described"])
    assert all(label in named for label in NIH_CHESTXRAY14_LABELS), state["chart"]
    assert state["gradcam"]["width"] >= 2 * PANEL_PIXELS and state["gradcam"]["height"] >= PANEL_PIXELS
    assert state["reconstruction"]["width"] >= 4 * PANEL_PIXELS

    # In the screenshot: each output's box holds what it should. The input is a gray radiograph with many gray levels;
    # the chart has coloured bars; the Grad-CAM overlay is in jet colours; the reconstruction has gray panels and a
    # magma error map. Every box is large enough to read.
    for name in ("input", "chart", "gradcam", "reconstruction"):
        box = state[name]["box"]
        assert box["width"] >= 300 and box["height"] >= 150, (name, state[name])
        assert box["y"] + box["height"] <= shot.height, f"{name} is below the screenshot"
    shown_input = crop(shot, state["input"]["box"])
    assert coloured(shown_input) < 0.01 * shown_input[..., 0].size and len(np.unique(shown_input[..., 0])) > 50
    assert coloured(crop(shot, state["chart"]["box"])) > 500
    assert coloured(crop(shot, state["gradcam"]["box"])) > 5000
    reconstruction = crop(shot, state["reconstruction"]["box"])
    shades = reconstruction.max(axis=-1) - reconstruction.min(axis=-1) < 10
    mid_gray = (reconstruction.mean(axis=-1) > 20) & (reconstruction.mean(axis=-1) < 235)
    assert coloured(reconstruction) > 2000 and (shades & mid_gray).sum() > 2000


def test_command_line_and_space_variables_with_one_line_errors(outbound, model_dirs, monkeypatch, capsys):
    for variable in ("CXR_MODEL", "CXR_MAE_MODEL", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SystemExit) as missing:
        app.main([])
    assert missing.value.code == 2 and "--model is required (or set CXR_MODEL)" in capsys.readouterr().err

    # sys.exit(message) is how main reports a bad model: Python prints the message to stderr and exits with 1.
    monkeypatch.setenv("CXR_MODEL", "nobody/no-such-model")  # not a directory: tried as a Hub repo id, offline
    with pytest.raises(SystemExit) as unknown:
        app.main([])
    assert "\n" not in unknown.value.code
    assert unknown.value.code.startswith("app.py: error: nobody/no-such-model: no such local directory")

    monkeypatch.setenv("CXR_MODEL", str(model_dirs["classifier"]))
    monkeypatch.setenv("CXR_MAE_MODEL", str(model_dirs["classifier"]))
    with pytest.raises(SystemExit) as wrong_kind:
        app.main([])
    assert "\n" not in wrong_kind.value.code and "has no MAE decoder" in wrong_kind.value.code


def test_host_and_port_from_flags_or_the_environment(monkeypatch):
    launched = {}

    class Demo:
        def launch(self, **kwargs):
            launched.update(kwargs)

    monkeypatch.setattr(app, "build_demo", lambda model, mae_model: Demo())
    for variable in ("CXR_MAE_MODEL", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(variable, raising=False)
    app.main(["--model", "m"])
    assert launched == {"server_name": "127.0.0.1", "server_port": 7860}  # loopback unless told otherwise
    app.main(["--model", "m", "--host", "0.0.0.0", "--port", "8080"])
    assert launched == {"server_name": "0.0.0.0", "server_port": 8080}
    # A Space sets these; the flags still win.
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    app.main(["--model", "m"])
    assert launched == {"server_name": "0.0.0.0", "server_port": 7861}
    app.main(["--model", "m", "--port", "9000"])
    assert launched == {"server_name": "0.0.0.0", "server_port": 9000}


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
