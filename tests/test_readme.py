"""README is the user's guide, and every command in it is real: each `cxr-vitmae ...` line parses with the CLI's own
parser, each `accelerate launch recipes/...` line with Accelerate's launcher parser and the recipe's own argument
parser (so its `--config` exists and every flag is one the recipe accepts), each `make` target exists, each
`python script.py --flag` names a script that defines the flag, each `pip install -e ".[extra]"` an extra of
pyproject.toml, and the Python snippets import only names that exist. A renamed flag, subcommand, config or target
fails here.

"Run by a test or by `make demo`" is checked too: `SUBCOMMAND_RUNNERS` names, for every subcommand, the test modules
(or the demo script) that invoke it, and each of them must still contain such an invocation. A README command that
nothing runs fails until a test runs it and is named here.

The measurements live in docs/results.md and benchmarks/RESULTS.md, which README links to; the scripts write their
sections into docs/results.md, so its markers are checked as well."""

import ast
import contextlib
import io
import re
import shlex
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results.md"
GUIDE = (README, ROOT / "docs" / "weights.md")
DEMO = "scripts/demo.py"  # what `make demo` runs

# For each CLI subcommand: the files that run it (test modules, or the demo that `make demo` runs).
SUBCOMMAND_RUNNERS = {
    "phantoms": ["tests/test_phantoms_nih.py", "tests/test_phantom_layouts.py", DEMO],
    "prepare": [DEMO, "scripts/reproduce.py"],  # reproduce.py: run by tests/test_reproduce.py
    "convert": ["tests/test_convert_vit.py"],
    "export-native": ["tests/test_readme.py"],  # test_export_native_as_the_readme_runs_it, below
    "predict": ["tests/test_cli.py", "tests/test_predict_batch.py"],
    "evaluate": ["tests/test_evaluate_cli.py", "tests/test_recipes.py", "tests/test_external_validation.py"],
    "gradcam": ["tests/test_gradcam.py", "tests/test_cli.py", DEMO],
    "localize": ["tests/test_localization.py", DEMO],
    "reconstruct": ["tests/test_reconstruction.py", DEMO],
    "anomaly-eval": ["tests/test_anomaly.py", DEMO],
    "push": ["tests/test_push.py", "tests/test_recipe_configs.py", DEMO],
}
# How a file shows that it drives the CLI (console script, `cli.main`, or the scripts' `cli(...)` helper).
CLI_DRIVERS = ("cxr-vitmae", "cxr_vitmae.cli", "cli(")
# The recipes: the files that launch each, and how (every top-level config by test_recipe_configs' glob).
RECIPE_RUNNERS = {
    "recipes/pretrain.py": ["tests/test_recipe_configs.py", "tests/test_own_data.py", DEMO],
    "recipes/finetune.py": ["tests/test_recipe_configs.py", "tests/test_recipes.py", "tests/test_own_data.py", DEMO],
}
# `make` targets: what runs each (`make test` is CI's own command, `.ci/run`).
MAKE_RUNNERS = {
    "demo": "Makefile",
    "test": ".ci/run",
    "test-floors": ".ci/run",
    "reproduce": "tests/test_reproduce.py",
    "lint": ".ci/run",
}


def readme() -> str:
    return README.read_text()


def guide() -> str:
    """README and the pages of the guide it links to (docs/weights.md), whose commands are checked alike."""
    return "\n".join(page.read_text() for page in GUIDE)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every ``` block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def shell_commands(text: str) -> list[list[str]]:
    """Every command of the bash blocks as argv: continuations joined, comments dropped, `&&` chains split, leading
    VAR=value assignments removed."""
    commands = []
    for language, body in fenced_blocks(text):
        if language not in ("bash", "sh", "shell", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            command: list[str] = []
            for token in [*tokens, "&&"]:
                if token in ("&&", ";", "||"):
                    while command and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", command[0]):
                        command.pop(0)
                    if command:
                        commands.append(command)
                    command = []
                else:
                    command.append(token)
    return commands


def inline_cli_commands(text: str) -> list[list[str]]:
    """`cxr-vitmae ...` code spans outside the code blocks (the conversion table, the prose)."""
    spans = re.findall(r"`(cxr-vitmae(?: [^`]*)?)`", without_fences(text))
    return [shlex.split(span) for span in spans]


def cli_commands(text: str) -> list[list[str]]:
    return [c for c in shell_commands(text) if c[0] == "cxr-vitmae"] + inline_cli_commands(text)


def accelerate_commands(text: str) -> list[list[str]]:
    return [c for c in shell_commands(text) if c[:2] == ["accelerate", "launch"]]


def python_snippets(text: str) -> list[str]:
    return [body for language, body in fenced_blocks(text) if language == "python"]


def corpus_option_names(corpus: str) -> set[str]:
    """The options `load_cxr_dataset(corpus, ..., **options)` accepts: its BuilderConfig's own fields and aliases."""
    import datasets

    from cxr_vitmae.data import builder_class

    cls = builder_class(corpus)
    own = {f.name for f in fields(cls.BUILDER_CONFIG_CLASS)} - {f.name for f in fields(datasets.BuilderConfig)}
    return own | set(getattr(cls, "OPTION_ALIASES", {}))


def _parse(parser, argv: list[str], what: str):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            return parser.parse_args(argv)
        except SystemExit as exit_:
            if exit_.code == 0 and "--help" in argv:
                return None
            pytest.fail(f"README's `{what}` does not parse: {stderr.getvalue().strip()}")


# --- README is the guide, the numbers are elsewhere -----------------------------------------------------------------


def test_readme_is_a_short_guide_that_links_its_results():
    text = readme()
    assert len(text.splitlines()) < 300, "README is the user's guide: under 300 lines (measurements: docs/results.md)"
    sections = ["Install", "The two commands", "Quick start", "Models", "Corpora", "Your own data", "Training recipes",
                "Publishing", "Explaining a model", "Demo app", "Citation"]  # fmt: skip
    for section in sections:
        assert f"\n## {section}" in text, section
    # No generated measurement sections any more: the scripts write them into docs/results.md.
    assert "<!--" not in text
    assert "](docs/results.md)" in text and "](benchmarks/RESULTS.md)" in text
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_results_page_has_the_sections_the_scripts_write():
    text = RESULTS.read_text()
    for name in ("demo", "reproduce"):
        assert text.count(f"<!-- {name}:start -->") == 1 and text.count(f"<!-- {name}:end -->") == 1, name
        assert text.index(f"<!-- {name}:start -->") < text.index(f"<!-- {name}:end -->")
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (RESULTS.parent / target).resolve().exists(), f"docs/results.md links to {target}"
    assert "--update-results" in (ROOT / "scripts" / "demo.py").read_text()
    assert "--update-results" in (ROOT / "scripts" / "reproduce.py").read_text()


def test_paper_numbers_on_the_results_page_are_the_model_cards_and_labelled():
    from cxr_vitmae.hub.model_card import PAPER_RESULTS

    text = RESULTS.read_text()
    section = text[text.index("## The paper's numbers") :]
    assert "**The paper's**" in section
    for model, pretraining, *numbers in (row for rows in PAPER_RESULTS.values() for row in rows):
        cells = " | ".join("—" if n is None else f"{n:.1f}" for n in numbers)
        assert f"| {model} | {pretraining} | {cells} |" in section, (model, pretraining)


# --- the commands exist -----------------------------------------------------------------------------------------------


def test_the_readme_has_commands_to_check():
    text = guide()
    assert len(cli_commands(text)) >= 15 and len(accelerate_commands(text)) >= 3 and python_snippets(text)


def test_every_cxr_vitmae_command_parses_with_the_real_cli():
    from cxr_vitmae.cli import build_parser

    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    for argv in cli_commands(guide()):
        args = argv[1:]
        if len(args) == 1 and not args[0].startswith("-"):
            # A subcommand named in prose (`cxr-vitmae prepare`): it must exist.
            assert args[0] in subcommands, f"README names `cxr-vitmae {args[0]}`, which is not a subcommand"
            continue
        _parse(build_parser(), args, " ".join(argv))


def test_every_recipe_command_parses_with_the_launcher_and_the_recipe():
    from accelerate.commands.launch import launch_command_parser

    from cxr_vitmae.training import arguments

    for argv in accelerate_commands(guide()):
        what = " ".join(argv)
        launched = _parse(launch_command_parser(), argv[2:], what)
        script = ROOT / launched.training_script
        assert script.is_file() and launched.training_script.startswith("recipes/"), what
        name = re.search(r"parse_recipe_arguments\((\w+)", script.read_text()).group(1)
        recipe_args = list(launched.training_script_args)
        config = recipe_args[recipe_args.index("--config") + 1]
        assert (ROOT / config).is_file(), f"{what}: no {config}"
        recipe_args[recipe_args.index("--config") + 1] = str(ROOT / config)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                arguments.parse_recipe_arguments(getattr(arguments, name), recipe_args)
            except SystemExit:
                pytest.fail(f"README's `{what}`: {launched.training_script} refuses it: {stderr.getvalue().strip()}")


def test_recipe_flags_named_in_the_prose_exist():
    """`--flag` spans in the text (not only in commands): underscore flags anywhere in README, and every flag of the
    "Training recipes" section, are the recipes' fields or Accelerate launcher options."""
    from accelerate.commands.launch import launch_command_parser

    from cxr_vitmae.training.arguments import FinetuneArguments, PretrainArguments

    recipe = {f"--{f.name}" for cls in (PretrainArguments, FinetuneArguments) for f in fields(cls)} | {"--config"}
    launcher = {option for action in launch_command_parser()._actions for option in action.option_strings}
    text = without_fences(readme())
    section = text[text.index("## Training recipes") : text.index("\n## ", text.index("## Training recipes") + 1)]
    spans = " ".join(re.findall(r"`([^`]*)`", text))
    flags = set(re.findall(r"(?<![\w-])--[a-z]+_[a-z_]+", spans))
    flags |= set(re.findall(r"(?<![\w-])--[a-z][a-z_]*", " ".join(re.findall(r"`([^`]*)`", section))))
    assert len(flags) >= 15
    unknown = sorted(flags - recipe - launcher - {"--help"})
    assert not unknown, f"README names recipe flags that neither recipe nor the launcher has: {unknown}"


def test_make_targets_scripts_and_extras_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    extras = set(re.search(r"\[project\.optional-dependencies\]\n(.*?)\n\n", (ROOT / "pyproject.toml").read_text(),
                           flags=re.S).group(1).split("\n"))  # fmt: skip
    extras = {line.split("=")[0].strip() for line in extras}
    checked = set()
    for argv in shell_commands(guide()):
        what = " ".join(argv)
        if argv[0] == "make":
            assert argv[1] in targets, f"README's `{what}`: no such Makefile target"
            checked.add("make")
        elif argv[0] in ("python", "python3"):
            script = ROOT / argv[1]
            assert script.is_file(), f"README's `{what}`: no {argv[1]}"
            source = script.read_text()
            for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
                assert f'"{flag}"' in source, f"README's `{what}`: {argv[1]} defines no {flag}"
            checked.add("python")
        elif argv[:3] == ["pip", "install", "-e"]:
            extra = re.fullmatch(r"\.\[([\w,-]+)\]", argv[3]).group(1)
            assert set(extra.split(",")) <= extras, f"README's `{what}`: pyproject.toml has no extra {extra}"
            checked.add("pip")
        else:
            assert argv[0] in ("cxr-vitmae", "accelerate"), f"README's `{what}` is not checked by this test"
    assert checked == {"make", "python", "pip"}


def test_python_snippets_compile_and_use_names_that_exist():
    for snippet in python_snippets(guide()):
        tree = ast.parse(snippet)  # a SyntaxError fails the test
        namespace: dict = {}
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(body=imports, type_ignores=[]), "README", "exec"), namespace)
        comments = {i + 1: line.split("#", 1)[1].strip() for i, line in enumerate(snippet.splitlines()) if "#" in line}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            constant = all(isinstance(a, ast.Constant) for a in node.args)
            if name in ("from_preset", "label_names") and constant:
                # Presets and label sets as written exist (a renamed preset raises here).
                value = eval(compile(ast.Expression(node), "README", "eval"), namespace)
                comment = comments.get(node.lineno, "")
                if name == "label_names" and comment.startswith("["):
                    assert value == ast.literal_eval(comment), "README shows another label order"
            if name == "load_cxr_dataset":
                corpus = node.args[0].value
                unknown = {k.arg for k in node.keywords} - corpus_option_names(corpus)
                assert not unknown, f"README passes {corpus} options it does not have: {sorted(unknown)}"


def test_corpus_table_options_are_the_builders_options_and_defaults():
    from cxr_vitmae.data import CORPORA, builder_class

    row_start = re.compile(r"\| `(nih-chestxray14|chexpert|mimic-cxr|covidx)` \|")
    rows = [line for line in readme().splitlines() if row_start.match(line)]
    assert len(rows) == 4
    for row in rows:
        corpus = re.match(r"\| `([\w.-]+)`", row).group(1)
        assert corpus in CORPORA
        cls = builder_class(corpus)
        defaults = {f.name: f.default for f in fields(cls.BUILDER_CONFIG_CLASS) if f.default is not MISSING}
        aliases = getattr(cls, "OPTION_ALIASES", {})
        for key, literal in re.findall(r"`(\w+)=([^`]+)`", row.split("|")[-2]):
            assert key in corpus_option_names(corpus), f"{corpus} has no option {key}"
            field = aliases.get(key, key)
            if field in defaults:
                default = defaults[field]
                written = ast.literal_eval(literal)
                assert written == (list(default) if isinstance(written, list) else default) or str(written) == str(
                    default
                ), f"{corpus}: README says {key}={literal}, the default is {default!r}"


# --- ... and something runs them ------------------------------------------------------------------------------------


def test_every_readme_subcommand_is_run_by_a_test_or_the_demo():
    used = {argv[1] for argv in cli_commands(guide()) if len(argv) > 1 and not argv[1].startswith("-")}
    missing = used - set(SUBCOMMAND_RUNNERS)
    assert not missing, f"README uses {sorted(missing)}: name the tests that run them in SUBCOMMAND_RUNNERS"
    for subcommand, files in SUBCOMMAND_RUNNERS.items():
        for file in files:
            source = (ROOT / file).read_text()
            invocation = re.search(rf"""["']{re.escape(subcommand)}["'],""", source)
            assert invocation and any(driver in source for driver in CLI_DRIVERS), (
                f"{file} no longer runs `cxr-vitmae {subcommand}`"
            )
    # prepare's second runner is the study script, which the smoke test runs.
    assert "scripts/reproduce.py" in (ROOT / "tests" / "test_reproduce.py").read_text()


def test_every_readme_recipe_and_config_is_run_by_a_test_or_the_demo():
    config_glob = 'glob("*.yaml")'
    assert config_glob in (ROOT / "tests" / "test_recipe_configs.py").read_text()
    for argv in accelerate_commands(guide()):
        script = next(a for a in argv if a.endswith(".py"))
        assert script in RECIPE_RUNNERS, f"README launches {script}: name the tests that run it in RECIPE_RUNNERS"
        stem = Path(script).stem
        for file in RECIPE_RUNNERS[script]:
            source = (ROOT / file).read_text()
            assert re.search(rf"""(["']{stem}["']|recipes/{stem}\.py|recipes/{{recipe}}\.py)""", source), (file, script)
        config = Path(argv[argv.index("--config") + 1])
        # test_recipe_configs runs every top-level config (its glob, asserted above).
        assert config.parent == Path("recipes/configs"), f"{config} is not one of the configs the tests run"
    for target, runner in MAKE_RUNNERS.items():
        assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), flags=re.M), target
        text = (ROOT / runner).read_text()
        assert runner == "Makefile" or f"make {target}" in text or "scripts/reproduce.py" in text, (target, runner)
    used = {argv[1] for argv in shell_commands(guide()) if argv[0] == "make"}
    assert used <= set(MAKE_RUNNERS), f"README uses make {sorted(used - set(MAKE_RUNNERS))}: name what runs them"


def test_export_native_as_the_readme_runs_it(tmp_path):
    """No other test drives `cxr-vitmae export-native` through the CLI: this one does, on a tiny classifier."""
    from transformers import AutoModelForImageClassification

    from cxr_vitmae import CXRViTMAEConfig, ViTMAEForChestXray
    from cxr_vitmae.cli import main

    config = CXRViTMAEConfig.from_preset(
        "vit-tiny", image_size=32, patch_size=8, num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
        intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )  # fmt: skip
    ViTMAEForChestXray(config).save_pretrained(tmp_path / "classifier")
    assert main(["export-native", str(tmp_path / "classifier"), str(tmp_path / "native")]) == 0
    native = AutoModelForImageClassification.from_pretrained(tmp_path / "native")
    assert native.config.model_type == "beit" and native.config.num_labels == config.num_labels
