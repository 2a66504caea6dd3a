"""A Gradio demo of cxr-vitmae: label probabilities, Grad-CAM and the MAE reconstruction of one chest radiograph.

    python app/app.py --model MODEL [--mae-model MAE_MODEL] [--port P]

MODEL is a fine-tuned classifier and MAE_MODEL an MAE pre-training model, each a saved model directory or a Hugging
Face Hub repo id. On a Space, set the variables CXR_MODEL and CXR_MAE_MODEL instead of the flags (see README.md).
"""

import argparse
import os
import sys
from pathlib import Path

import gradio as gr
import torch
from huggingface_hub import snapshot_download

from cxr_vitmae.explain.gradcam import explain_image
from cxr_vitmae.explain.reconstruction import load_pretraining_model, reconstruction_panel
from cxr_vitmae.models.image_processing_cxr import RadiographReadError, load_radiograph
from cxr_vitmae.predict import load_classifier, predict_images

MODEL_VARIABLE = "CXR_MODEL"
MAE_MODEL_VARIABLE = "CXR_MAE_MODEL"
NO_MAE_MODEL_NOTE = (
    "No MAE pre-training model is loaded, so there is no reconstruction: a fine-tuned classifier has no decoder. "
    f"Start the app with `--mae-model DIR_OR_REPO_ID` (or set `{MAE_MODEL_VARIABLE}`)."
)
MOST_PROBABLE_LABEL = "(the most probable label)"
DISCLAIMER = "Research demo, not a medical device: do not use it for diagnosis."


def resolve_model_dir(model: str | os.PathLike) -> Path:
    """`model` itself when it is a local directory; otherwise it is taken as a Hub repo id and downloaded (or found in
    the Hugging Face cache) with `huggingface_hub.snapshot_download`, which also reads `HF_TOKEN` for private repos."""
    path = Path(model)
    if path.is_dir():
        return path
    try:
        return Path(snapshot_download(repo_id=str(model)))
    except (OSError, ValueError) as error:
        raise OSError(
            f"{str(model)!r} is not a local model directory, and fetching it as a Hugging Face Hub repo id failed: "
            f"{error}"
        ) from error


def build_demo(
    model: str | os.PathLike, mae_model: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> gr.Blocks:
    """The Gradio app for classifier `model` and, optionally, MAE pre-training model `mae_model` (directories or Hub
    repo ids), both loaded now on `device` (default: CUDA when available), so that a wrong model fails at start-up.

    One event, `api_name="analyse"`, takes (file path, Grad-CAM label or "" for the most probable one, mask ratio,
    masking seed, anomaly-map maskings) and returns (label probabilities, Grad-CAM overlay, reconstruction strip or
    None, a note on the reconstruction).

    Raises:
        OSError: a model is neither a directory nor a Hub repo id that can be fetched.
        ValueError: `model` is not an image classifier, or `mae_model` is not an MAE pre-training model.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    classifier, processor = load_classifier(resolve_model_dir(model), device)
    labels = [classifier.config.id2label[index] for index in range(classifier.config.num_labels)]
    mae, mae_processor = load_pretraining_model(resolve_model_dir(mae_model), device) if mae_model else (None, None)

    def analyse(path: str | None, label: str | None, mask_ratio: float, seed: float, anomaly_maskings: float):
        if not path:
            raise gr.Error("Upload a radiograph first (PNG, JPEG or DICOM).")
        try:
            radiograph = load_radiograph(path)
        except RadiographReadError as error:
            raise gr.Error(f"{Path(path).name}: {error}") from error
        probabilities = predict_images(classifier, processor, {path: radiograph})[path]
        cam = explain_image(classifier, processor, radiograph, label or None)
        gradcam = gr.Image(value=cam.overlay, label=f"Grad-CAM: {cam.label} (p = {cam.probability:.3f})")
        if mae is None:
            return probabilities, gradcam, None, NO_MAE_MODEL_NOTE
        seed, anomaly_maskings = int(seed), int(anomaly_maskings)
        try:
            panel = reconstruction_panel(
                mae, mae_processor, radiograph, mask_ratio=mask_ratio, seed=seed, anomaly_maskings=anomaly_maskings
            )
        except ValueError as error:  # a mask ratio that would hide every patch of this model
            raise gr.Error(str(error)) from error
        note = f"Original / masked ({mask_ratio:.0%} of patches hidden, seed {seed}) / reconstruction / |error|"
        if anomaly_maskings:
            note += f" / anomaly map (mean error over {anomaly_maskings} maskings)"
        return probabilities, gradcam, panel, note + "."

    # Uploads may be patient images: no telemetry, and Gradio's file cache is emptied of anything older than an hour,
    # every hour. Without telemetry the app also works where there is no network.
    with gr.Blocks(title="cxr-vitmae", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# Chest X-ray classification with masked-autoencoder ViTs\n"
            f"Classifier: `{model}`. MAE model: `{mae_model or 'none'}`. {DISCLAIMER}"
        )
        with gr.Row():
            with gr.Column():
                # gr.File, not gr.Image: browsers cannot show DICOM, and DICOM files often have no extension, so every
                # file is accepted and load_radiograph decides what it is.
                upload = gr.File(label="Radiograph (PNG, JPEG or DICOM)", type="filepath", elem_id="radiograph")
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
                run = gr.Button("Analyse", variant="primary")
            probabilities = gr.Label(num_top_classes=len(labels), label="Label probabilities", elem_id="probabilities")
        with gr.Row():
            # PNG, not Gradio's default WebP: lossless, so what is shown is exactly what the explain functions drew.
            gradcam = gr.Image(label="Grad-CAM", format="png", interactive=False)
            with gr.Column():
                reconstruction = gr.Image(label="MAE reconstruction", format="png", interactive=False)
                reconstruction_note = gr.Markdown(NO_MAE_MODEL_NOTE if mae is None else "")
        run.click(
            analyse,
            inputs=[upload, label_choice, mask_ratio, seed, anomaly_maskings],
            outputs=[probabilities, gradcam, reconstruction, reconstruction_note],
            api_name="analyse",
        )
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags, falling back to the CXR_MODEL / CXR_MAE_MODEL environment variables (a Space's settings)."""
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
        "--port", type=int, default=None, help="server port (default: $GRADIO_SERVER_PORT, else Gradio's 7860)"
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
    demo.launch(server_port=args.port)


if __name__ == "__main__":
    main()
