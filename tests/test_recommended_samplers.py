"""The "which sampler" table: one source (diffusers_sde/schedulers/recommended.py) for the docs and the CLI help."""

import contextlib
import io
from pathlib import Path

import pytest

from diffusers_sde.cli import SCHEDULER_SAMPLERS, main
from diffusers_sde.schedulers.recommended import (
    RECOMMENDED_SCHEDULERS,
    SDES,
    recommended_samplers_text,
    recommended_schedulers_markdown,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "fast_samplers.md"


def test_the_docs_table_is_the_recommendation_table():
    table = recommended_schedulers_markdown()
    assert table.splitlines()[0] == "| NFE budget | VE | VP | sub-VP |"
    assert "| 20-30 | `UniPCScheduler` (default order 3 + UniC; 1.4% at 20, within 1% from 25) |" in table
    assert table in DOCS.read_text()


def test_sample_help_shows_the_recommendation_table():
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert recommended_samplers_text(SCHEDULER_SAMPLERS) in help_text.getvalue()  # line breaks kept as written
    expected_line = "    sub-VP: er_sde (within 1% from 40)"
    assert expected_line in help_text.getvalue()


@pytest.mark.parametrize("sde", SDES)
def test_every_recommendation_is_a_command_line_sampler_and_builds(sde):
    for budget, cells in RECOMMENDED_SCHEDULERS:
        choices, why = cells[sde]
        assert why
        for scheduler_class, options in choices:
            assert scheduler_class in SCHEDULER_SAMPLERS.values()
            scheduler = scheduler_class(sde_type=sde, **options)
            assert all(scheduler.config[name] == value for name, value in options.items())
