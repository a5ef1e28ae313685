"""The README is a product page, docs/ holds the reference, and both are for users.

Reference parts are generated from the code and must not drift from it; user-facing
text carries no development history; links between the pages resolve.
"""

from __future__ import annotations

import re
from pathlib import Path

from metrics_samples import populated_metrics

from monitor.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MAX_README_LINES = 400

#: A commit id (7 to 12 hex digits, letters and digits both) or words that belong to
#: the project's history rather than to its users.
HISTORY = re.compile(
    r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,12}\b"
    r"|\b(this|that|the previous) session\b|\bissue\b|today's main",
    re.IGNORECASE,
)


def test_configuration_reference_matches_the_option_list() -> None:
    text = (DOCS / "configuration.md").read_text()
    block = re.search(
        r"<!-- config-reference:start -->\n(.*?)\n<!-- config-reference:end -->", text, re.S
    )
    assert block is not None, "docs/configuration.md lacks the configuration reference markers"
    assert block.group(1).strip() == reference_markdown().strip(), (
        "docs/configuration.md's table is stale: regenerate it with `python -m monitor.config`"
    )


def test_monitoring_reference_lists_every_exported_metric() -> None:
    text = (DOCS / "metrics.md").read_text()
    registry = populated_metrics(include_process=False).registry
    names = {family.name for family in registry.collect()}
    assert len(names) > 25
    missing = sorted(n for n in names if f"`{n}" not in text)
    assert not missing, f"docs/metrics.md misses {missing}"


def test_readme_is_a_product_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES, "move detail into docs/"
    for heading in ("## Install", "## Try it: `make demo`", "## Your own model", "## Deploy"):
        assert f"\n{heading}\n" in text, f"README lacks {heading}"
    assert "make demo" in text and "make test" in text


def test_user_facing_pages_carry_no_development_history() -> None:
    found = [
        f"{page.relative_to(ROOT)}:{number}: {match.group(0)!r}"
        for page in PAGES
        for number, line in enumerate(page.read_text().splitlines(), 1)
        for match in HISTORY.finditer(line)
    ]
    assert not found, "\n".join(found)


def test_relative_links_resolve() -> None:
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in PAGES
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
        if not target.startswith(("http://", "https://", "mailto:"))
        and not (page.parent / target).exists()
    ]
    assert not broken, "\n".join(broken)
