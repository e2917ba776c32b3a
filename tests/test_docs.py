"""The documentation runs: every ```python snippet of README.md and docs/*.md is executed, each page's snippets in order
in one namespace (as a reader would paste them), from a working directory outside the repository; every
`diffusers-sde ...` line of a ```bash snippet is accepted by the real command-line parser and the sample command's
checks (loading and running them would cost minutes)."""

import pathlib
import re
import shlex

import pytest

from diffusers_sde.cli import SAMPLER_ALIASES, _check_sample_arguments, build_parser

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]


def _blocks(page, language):
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.M | re.S)


PYTHON_PAGES = [page for page in PAGES if _blocks(page, "python")]


def test_the_pages_with_python_snippets_are_the_expected_ones():
    # Guards the parametrization below against a regular expression that silently matches nothing.
    names = {page.relative_to(REPOSITORY).as_posix() for page in PYTHON_PAGES}
    assert {"README.md", "docs/core.md", "docs/fast_samplers.md", "docs/likelihood.md", "docs/training.md"} <= names


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda page: page.name)
def test_python_snippets_run_from_outside_the_repository(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for number, code in enumerate(_blocks(page, "python"), start=1):
        exec(compile(code, f"{page.name}, python snippet {number}", "exec"), namespace)


def _command_lines(page):
    """The arguments of every `diffusers-sde` call (after environment variables and a path such as .venv/bin/)."""
    for block in _blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("#")[0])
            starts = [i for i, word in enumerate(words) if word.rsplit("/", 1)[-1] == "diffusers-sde"]
            if starts:
                yield shlex.join(words[starts[0]:])


COMMAND_LINES = [(page.name, line) for page in PAGES for line in _command_lines(page)]


def test_the_documented_command_lines_are_collected():
    assert len(COMMAND_LINES) >= 3


@pytest.mark.parametrize("page, line", COMMAND_LINES)
def test_documented_command_lines_are_accepted(page, line):
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert args.command in ("sample", "likelihood", "train", "train-classifier", "convert", "inpaint", "colorize",
                            "img2img", "train-vae", "train-ddgan")
    if args.command == "sample":  # current names only, and options that apply to the sampler
        assert args.sampler not in SAMPLER_ALIASES and args.solver is None
        _check_sample_arguments(args)
