"""The README's reference parts are generated from the code and must not drift from it."""

from __future__ import annotations

import re
from pathlib import Path

from metrics_samples import populated_metrics

from monitor.config import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_configuration_reference_matches_the_option_list() -> None:
    text = README.read_text()
    block = re.search(
        r"<!-- config-reference:start -->\n(.*?)\n<!-- config-reference:end -->", text, re.S
    )
    assert block is not None, "README lacks the configuration reference markers"
    assert block.group(1).strip() == reference_markdown().strip(), (
        "README's configuration table is stale: regenerate it with `python -m monitor.config`"
    )


def test_monitoring_section_lists_every_exported_metric() -> None:
    text = README.read_text()
    registry = populated_metrics(include_process=False).registry
    names = {family.name for family in registry.collect()}
    assert len(names) > 25
    missing = sorted(n for n in names if f"`{n}" not in text)
    assert not missing, f"README's Monitoring section misses {missing}"


def test_quickstart_shows_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
