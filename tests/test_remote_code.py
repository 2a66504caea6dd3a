"""The code a saved model directory carries (remote code) must keep loading when transformers moves its internals.

A published model keeps its copy of our modeling files forever, and its users never see our version ranges, so those
files may import only what transformers documents as public: names it exports at the top level, plus
`transformers.modeling_outputs` and `transformers.utils.ModelOutput`, the paths under which its documentation lists the
output classes. timm is allowed only in the DenseNet and timm-family files, whose networks are timm's. Loading with the
package hidden is tested in test_vit_mae.py, test_densenet.py and test_timm_family.py; .ci/run also runs the first two
at the declared transformers floor.
"""

import ast
import sys
from pathlib import Path

import pytest
import transformers

from cxr_vitmae import (
    CXRDenseNetConfig,
    CXRTimmConfig,
    CXRViTMAEConfig,
    CXRViTMAEForPreTraining,
    DenseNetForChestXray,
    TimmForChestXray,
    ViTMAEForChestXray,
)

# The model classes whose files may import timm.
TIMM_NETWORKS = (DenseNetForChestXray, TimmForChestXray)

# Modules `from transformers import` documents: `initialization as init` is how `_init_weights` must initialise (its
# functions leave loaded weights alone). A lazily imported submodule is not an attribute of `transformers` until some
# import has loaded it, so `hasattr` alone would depend on import order.
DOCUMENTED_MODULES = {"initialization"}
# Documented transformers paths other than the top level, and what each may give.
DOCUMENTED_SUBMODULES = {
    "transformers.modeling_outputs": None,  # every output class
    "transformers.utils": {"ModelOutput"},
}
# Libraries besides transformers a model directory may use: torch and what the image processor reads images with.
ALLOWED_LIBRARIES = {"torch", "torchvision", "numpy", "PIL", "pydicom", "huggingface_hub"}


def saved_model_dir(model_class, tmp_path: Path) -> Path:
    if model_class is DenseNetForChestXray:
        config = CXRDenseNetConfig.from_preset("densenet121", growth_rate=4, block_config=(2, 2), num_init_features=8)
    elif model_class is TimmForChestXray:
        config = CXRTimmConfig.from_preset("timm:resnet10t", num_labels=3)
    else:
        config = CXRViTMAEConfig.from_preset("vit-tiny", num_labels=3)
    directory = tmp_path / model_class.__name__
    model_class(config).save_pretrained(directory)
    return directory


def import_problems(path: Path, timm_allowed: bool) -> list[str]:
    """What in `path` imports something other than the allowed libraries and transformers' public API."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported = [(node.module, alias.name) for alias in node.names]
        else:
            continue  # relative imports: files copied along
        for module, name in imported:
            root = module.split(".")[0]
            where = f"{path.name}:{node.lineno}: {module}" + (f".{name}" if name else "")
            if root in sys.stdlib_module_names or root in ALLOWED_LIBRARIES or (root == "timm" and timm_allowed):
                continue
            if module == "transformers" and (name in DOCUMENTED_MODULES or hasattr(transformers, name)):
                continue
            if module in DOCUMENTED_SUBMODULES and name is not None:
                allowed = DOCUMENTED_SUBMODULES[module]
                if allowed is None or name in allowed:
                    continue
            problems.append(where)
    return problems


@pytest.mark.parametrize(
    "model_class", [ViTMAEForChestXray, CXRViTMAEForPreTraining, DenseNetForChestXray, TimmForChestXray]
)
def test_model_directory_code_imports_only_public_api(model_class, tmp_path):
    directory = saved_model_dir(model_class, tmp_path)
    code_files = sorted(directory.glob("*.py"))
    assert any(path.name.startswith("modeling_") for path in code_files)
    timm_allowed = model_class in TIMM_NETWORKS
    problems = [problem for path in code_files for problem in import_problems(path, timm_allowed)]
    assert problems == []


def test_the_import_check_catches_an_internal_import(tmp_path):
    module = tmp_path / "modeling_example.py"
    module.write_text(
        "import torch\n"
        "from transformers import PreTrainedModel\n"
        "from transformers.models.vit_mae.modeling_vit_mae import ViTMAEPatchEmbeddings\n"
        "from transformers.utils.generic import can_return_tuple\n"
        "from timm.layers import DropPath\n"
        "from .configuration_example import ExampleConfig\n"
    )
    problems = import_problems(module, timm_allowed=False)
    assert [problem.split(": ", 1)[1] for problem in problems] == [
        "transformers.models.vit_mae.modeling_vit_mae.ViTMAEPatchEmbeddings",
        "transformers.utils.generic.can_return_tuple",
        "timm.layers.DropPath",
    ]
