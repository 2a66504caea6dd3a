"""A Gradio demo of cxr-vitmae: label probabilities, Grad-CAM and the MAE reconstruction of one chest radiograph.

    python app/app.py --model MODEL [--mae-model MAE_MODEL] [--host HOST] [--port PORT]

MODEL is a fine-tuned classifier and MAE_MODEL an MAE pre-training model, each a saved model directory or a Hugging
Face Hub repo id. On a Space, set the variables CXR_MODEL and CXR_MAE_MODEL instead of the flags (see README.md).
"""

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxr_vitmae.data.phantoms import generate_phantoms
from cxr_vitmae.evaluation.figures import panels_image
from cxr_vitmae.explain.gradcam import explain_image, gradcam_panels
from cxr_vitmae.explain.reconstruction import load_pretraining_model, reconstruction_panels, reconstruction_views
from cxr_vitmae.model_directory import model_name
from cxr_vitmae.models.image_processing_cxr import RadiographReadError, load_radiograph
from cxr_vitmae.predict import load_classifier, predict_images

MODEL_VARIABLE = "CXR_MODEL"
MAE_MODEL_VARIABLE = "CXR_MAE_MODEL"
HOST_VARIABLE, DEFAULT_HOST = "GRADIO_SERVER_NAME", "127.0.0.1"  # Spaces set GRADIO_SERVER_NAME=0.0.0.0
PORT_VARIABLE, DEFAULT_PORT = "GRADIO_SERVER_PORT", 7860
NO_MAE_MODEL_NOTE = (
    "No MAE pre-training model is loaded, so there is no reconstruction: a fine-tuned classifier has no decoder. "
    f"Start the app with `--mae-model DIR_OR_REPO_ID` (or set `{MAE_MODEL_VARIABLE}`)."
)
MULTI_LABEL_NOTE = (
    "Each bar is one label's own probability (an independent sigmoid per label): they do not add up to 1, several "
    "can be high at once, and no single bar is the diagnosis."
)
SINGLE_LABEL_NOTE = (
    "One softmax over the {n} classes: the bars add up to 1. A research model's scores, not a diagnosis."
)
MOST_PROBABLE_LABEL = "(the most probable label)"
DISCLAIMER = "Research demo, not a medical device: do not use it for diagnosis."
# The decoded upload is shown at most this many pixels a side (a DICOM can be 3000 px; the browser needs no more).
SHOWN_INPUT_PIXELS = 1024

# Example phantoms: synthetic radiographs drawn by the package's phantom generator at start-up (no real radiograph can
# be shipped). This seed's first 12 phantoms hold a normal film and films with one plain finding each.
EXAMPLE_CORPUS = {"num_images": 12, "seed": 6, "size": 512, "difficulty": "easy"}
EXAMPLE_FINDINGS = ("Effusion", "Pneumothorax", "Mass", "Cardiomegaly")
NO_FINDING = "No Finding"


def write_examples(directory: str | os.PathLike) -> list[tuple[Path, str]]:
    """A few synthetic phantoms for the example gallery, as (file, caption): one without findings and one for each
    finding of `EXAMPLE_FINDINGS` that the example corpus shows alone. The files are named
    `synthetic-phantom-FINDING.png`, so that they are never mistaken for a corpus's files."""
    directory = Path(directory)
    corpus = generate_phantoms(directory / "corpus", **EXAMPLE_CORPUS)
    chosen = {}
    for image in corpus.images:
        if not image.findings:
            chosen.setdefault(NO_FINDING, image)
        elif len(image.findings) == 1 and image.findings[0] in EXAMPLE_FINDINGS:
            chosen.setdefault(image.findings[0], image)
    examples = []
    for finding in (NO_FINDING, *EXAMPLE_FINDINGS):
        if finding in chosen:
            path = directory / f"synthetic-phantom-{finding.lower().replace(' ', '-')}.png"
            shutil.copyfile(corpus.output_dir / "images" / chosen[finding].file_name, path)
            examples.append((path, f"Synthetic phantom: {finding}"))
    shutil.rmtree(corpus.output_dir)
    return examples


def shown_input(radiograph: np.ndarray) -> Image.Image:
    """The decoded radiograph (float in [0, 1], (H, W) or (H, W, 3)) as an 8-bit image for the page, at most
    `SHOWN_INPUT_PIXELS` a side."""
    image = Image.fromarray(np.round(np.clip(radiograph, 0.0, 1.0) * 255).astype(np.uint8))
    image.thumbnail((SHOWN_INPUT_PIXELS, SHOWN_INPUT_PIXELS), Image.Resampling.LANCZOS)
    return image


def build_demo(
    model: str | os.PathLike, mae_model: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> gr.Blocks:
    """The Gradio app for classifier `model` and, optionally, MAE pre-training model `mae_model` (directories or Hub
    repo ids), both loaded now on `device` (default: CUDA when available), so that a wrong model fails at start-up.

    One API endpoint, `/analyse`, takes (file path, Grad-CAM label or "" for the most probable one, mask ratio, masking
    seed, anomaly-map maskings) and returns (the decoded radiograph, the bar chart of every label's probability, the
    Grad-CAM figure, the reconstruction figure or None, a note on the reconstruction). The page also analyses a file
    as soon as it is uploaded or an example is clicked.

    Raises:
        ValueError: a model is neither a model directory nor a Hub repo id that can be fetched (`InputError`),
            `model` is not an image classifier, or `mae_model` is not an MAE pre-training model.
        OSError: a model directory cannot be read.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    classifier, processor = load_classifier(model, device)
    labels = [classifier.config.id2label[index] for index in range(classifier.config.num_labels)]
    multi_label = classifier.config.problem_type == "multi_label_classification"
    mae, mae_processor = load_pretraining_model(mae_model, device) if mae_model else (None, None)
    classifier_name = model_name(model)
    mae_name = model_name(mae_model) if mae_model else None

    def analyse(path: str | None, label: str | None, mask_ratio: float, seed: float, anomaly_maskings: float):
        if not path:
            raise gr.Error("Upload a radiograph first (PNG, JPEG or DICOM).")
        try:
            radiograph = load_radiograph(path)
        except RadiographReadError as error:
            raise gr.Error(f"{Path(path).name}: {error}") from error
        probabilities = predict_images(classifier, processor, {path: radiograph})[path]
        chart = pd.DataFrame(sorted(probabilities.items(), key=lambda item: -item[1]), columns=["label", "probability"])
        cam = explain_image(classifier, processor, radiograph, label or None)
        panels, title = gradcam_panels(cam, classifier_name)
        gradcam = panels_image(panels, title=title)
        if mae is None:
            return shown_input(radiograph), chart, gradcam, None, NO_MAE_MODEL_NOTE
        seed, anomaly_maskings = int(seed), int(anomaly_maskings)
        try:
            views = reconstruction_views(
                mae, mae_processor, radiograph, mask_ratio, seed, anomaly_maskings=anomaly_maskings
            )
        except ValueError as error:  # a mask ratio that would hide every patch of this model
            raise gr.Error(str(error)) from error
        panels, title = reconstruction_panels(views, mae_name, mask_ratio, seed, anomaly_maskings)
        figure = panels_image(panels, title=title)
        note = f"Original / masked ({mask_ratio:.0%} of patches hidden, seed {seed}) / reconstruction / |error|"
        if anomaly_maskings:
            note += f" / anomaly map (mean error over {anomaly_maskings} maskings)"
        return shown_input(radiograph), chart, gradcam, figure, note + "."

    def analyse_upload(path: str | None, *settings):
        """The page's own event on a new file: a cleared upload clears the results instead of asking for a file."""
        if not path:
            return None, None, None, None, NO_MAE_MODEL_NOTE if mae is None else ""
        return analyse(path, *settings)

    examples_dir = Path(tempfile.mkdtemp(prefix="cxr-vitmae-examples-"))
    atexit.register(shutil.rmtree, examples_dir, ignore_errors=True)
    examples = write_examples(examples_dir)

    # Uploads may be patient images: no telemetry, and Gradio's file cache is emptied of anything older than an hour,
    # every hour. Without telemetry the app also works where there is no network.
    with gr.Blocks(title="cxr-vitmae", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# Chest X-ray classification with masked-autoencoder ViTs\n"
            f"Classifier: `{model}`. MAE model: `{mae_model or 'none'}`. {DISCLAIMER}"
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                # gr.File, not gr.Image: browsers cannot show DICOM, and DICOM files often have no extension, so every
                # file is accepted and load_radiograph decides what it is.
                upload = gr.File(label="Radiograph (PNG, JPEG or DICOM)", type="filepath", elem_id="radiograph")
                gr.Examples(
                    [[str(path)] for path, _ in examples],
                    inputs=[upload],
                    example_labels=[caption for _, caption in examples],
                    label="Examples: synthetic phantoms, not real radiographs",
                    elem_id="examples",
                )
                # The empty value stands for "whichever label is most probable", and is the starting choice.
                label_choice = gr.Dropdown(
                    choices=[(MOST_PROBABLE_LABEL, ""), *labels], value="", label="Grad-CAM label"
                )
                with gr.Group(visible=mae is not None):
                    # Starts at the ratio the MAE was pre-trained with: the view its decoder learnt to fill in.
                    trained_ratio = mae.config.mask_ratio if mae is not None else None
                    mask_ratio = gr.Slider(0.05, 0.95, value=trained_ratio, step=0.05, label="MAE mask ratio")
                    seed = gr.Number(value=0, precision=0, label="Masking seed")
                    anomaly_maskings = gr.Slider(0, 16, value=0, step=1, label="Anomaly-map maskings (0: none)")
                run = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column(scale=1):
                # PNG, not Gradio's default WebP: lossless, so what is shown is exactly what was decoded or drawn.
                shown = gr.Image(
                    label="Uploaded radiograph (as decoded)", format="png", interactive=False, elem_id="input-image"
                )
            with gr.Column(scale=1):
                probabilities = gr.BarPlot(
                    x="label",
                    y="probability",
                    sort="-y",
                    y_lim=[0, 1],
                    x_label_angle=-45,
                    label="Label probabilities",
                    caption=MULTI_LABEL_NOTE if multi_label else SINGLE_LABEL_NOTE.format(n=len(labels)),
                    elem_id="probabilities",
                )
        gradcam = gr.Image(label="Grad-CAM", format="png", interactive=False, elem_id="gradcam")
        reconstruction = gr.Image(label="MAE reconstruction", format="png", interactive=False, elem_id="reconstruction")
        reconstruction_note = gr.Markdown(
            NO_MAE_MODEL_NOTE if mae is None else "", label="Reconstruction note", elem_id="reconstruction-note"
        )
        inputs = [upload, label_choice, mask_ratio, seed, anomaly_maskings]
        outputs = [shown, probabilities, gradcam, reconstruction, reconstruction_note]
        run.click(analyse, inputs=inputs, outputs=outputs, api_name="analyse")
        upload.change(analyse_upload, inputs=inputs, outputs=outputs, api_visibility="undocumented")
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags, falling back to the environment: CXR_MODEL / CXR_MAE_MODEL (a Space's settings) and
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (which Spaces set)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=os.environ.get(MODEL_VARIABLE),
        help=f"classifier: a model directory or Hub repo id (default: ${MODEL_VARIABLE})",
    )
    parser.add_argument(
        "--mae-model",
        default=os.environ.get(MAE_MODEL_VARIABLE) or None,
        help=f"MAE pre-training model for reconstructions: a model directory or Hub repo id (default: "
        f"${MAE_MODEL_VARIABLE}; none: no reconstruction)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get(HOST_VARIABLE) or DEFAULT_HOST,
        help=f"address to listen on (default: ${HOST_VARIABLE}, else {DEFAULT_HOST}; 0.0.0.0: every interface)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(PORT_VARIABLE) or DEFAULT_PORT),
        help=f"port to listen on (default: ${PORT_VARIABLE}, else {DEFAULT_PORT})",
    )
    args = parser.parse_args(argv)
    if not args.model:
        parser.error(f"--model is required (or set {MODEL_VARIABLE})")
    return args


def main(argv: list[str] | None = None) -> None:
    """Load the models and serve the app until interrupted; a bad model or file is one line on stderr, exit 1."""
    args = parse_args(argv)
    try:
        demo = build_demo(args.model, args.mae_model)
    except (OSError, ValueError) as error:
        sys.exit(f"app.py: error: {error}")
    demo.launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
