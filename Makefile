# The two commands of the README. Each sets itself up on a fresh machine: a virtual environment in .venv with
# the package and its dev extras, reinstalled whenever pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast test-floors demo reproduce lint

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Every test, spread over the cores (pytest-xdist; a test file stays on one worker, so its module fixtures are built
# once). CI runs this.
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist loadfile --durations=25

# The inner loop: everything but the tests marked slow (subprocesses, recipes under accelerate launch, the app and its
# browser, end-to-end runs); a few minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist loadfile -m "not slow"

# The declared dependency floors (.ci/floors.txt, equal to pyproject.toml's lower bounds: tests/test_floors.py) in an
# environment of their own, and the smoke subset of the suite there: import, models, save/load, remote code and the
# pipeline without the package, a corpus build, metrics, a tiny recipe run. .ci/run runs it after `make test`.
FLOORS_VENV := .venv-floors
SMOKE_TESTS := tests/test_vit_mae.py tests/test_densenet.py tests/test_remote_code.py tests/test_pipeline.py \
	tests/test_image_processor.py tests/test_data_nih.py tests/test_data_pretrain.py tests/test_metrics.py \
	tests/test_evaluate_module.py tests/test_figures.py tests/test_gradcam.py tests/test_optim.py tests/test_transforms.py \
	tests/test_model_card.py tests/test_recipes.py::test_finetune_selects_on_validation_and_evaluates_test_once

test-floors:
	test -x $(FLOORS_VENV)/bin/python || $(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLOORS_VENV)/bin/python -m pip install --quiet -r .ci/floors.txt -e ".[dicom,explain,evaluate]" "pytest>=8.0" \
		"pytest-xdist>=3.5"
	$(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider -n auto --dist loadfile $(SMOKE_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# CNN="timm:resnet18 timm:convnext_tiny" adds CNN baselines beside DenseNet-121 to the demo and the study.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py --output demo_output --update-results $(foreach model,$(CNN),--cnn $(model))

# The reproduction study: at most 60 minutes on 2 CPU cores (docs/results.md, "Reproduction study").
reproduce: $(STAMP)
	$(BIN)/python scripts/reproduce.py --output reproduce_output --update-results $(foreach model,$(CNN),--cnn $(model))
