"""Foundation demo: build the paper's models, save them as the Hub would see them, and classify an image.

No weights can be downloaded here and the training recipes are not in this release yet, so the models carry random
weights: the demo shows the loading paths (save_pretrained -> AutoModel / pipeline / the `predict` CLI), not accuracy.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import pipeline

from cxr_vitmae import CXRDenseNetConfig, CXRViTMAEConfig, DenseNetForChestXray, ViTMAEForChestXray


def synthetic_radiograph(directory: Path, size: int = 512) -> tuple[Path, Path]:
    """The same grayscale test image (a bright oval on a dark background, not a phantom of any finding) as 16-bit
    and 8-bit PNG. Pipelines get the 8-bit one: transformers' pipeline converts every file to 8-bit RGB."""
    rows, cols = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    body = np.clip(1.2 - (rows / 0.9) ** 2 - (cols / 0.75) ** 2, 0, 1)
    image = np.clip(body + np.random.default_rng(0).normal(0, 0.03, body.shape), 0, 1)
    paths = directory / "synthetic_cxr_16bit.png", directory / "synthetic_cxr_8bit.png"
    Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(paths[0])
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(paths[1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)

    image_16bit, image_8bit = synthetic_radiograph(args.output)
    models = {
        "vit-small-nih": ViTMAEForChestXray(CXRViTMAEConfig.from_preset("vit-small")),
        "densenet121-nih": DenseNetForChestXray(CXRDenseNetConfig.from_preset("densenet121")),
    }
    for name, model in models.items():
        model_dir = args.output / name
        model.save_pretrained(model_dir)
        parameters = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name}: {parameters:.2f} M parameters, saved to {model_dir}")
        top = pipeline("image-classification", model=str(model_dir))(str(image_8bit), top_k=3)
        print(f"  pipeline top-3 (random weights): {[(t['label'], round(t['score'], 3)) for t in top]}")

    command = [sys.executable, "-m", "cxr_vitmae", "predict", str(args.output / "vit-small-nih"), str(image_16bit)]
    print("$ cxr-vitmae predict", *command[4:])
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
