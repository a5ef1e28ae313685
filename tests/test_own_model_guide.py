"""The README's "Your own model" guide, run as written against the real local broker.

The guide's commands live in ``docs/examples/own_model.sh`` between ``# guide:start``
and ``# guide:end``; the README shows the same block. The test checks the two agree and
runs the script in a scratch directory: a classifier that is not the demo's is trained,
fitted, described, given topics, served by the worker, sent records and read back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from fixtures_kafka import delete_topics

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "examples" / "own_model.sh"
README = ROOT / "README.md"


def _between(text: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, re.S)
    assert match is not None, f"no block between {start!r} and {end!r}"
    return match.group(1).strip()


def test_the_readme_shows_the_script_as_it_is() -> None:
    script = _between(SCRIPT.read_text(), "# guide:start", "# guide:end")
    readme = _between(README.read_text(), "<!-- own-model:start -->", "<!-- own-model:end -->")
    block = _between(readme, "```sh", "```")
    assert block == script, "README's own-model block differs from docs/examples/own_model.sh"


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_guide_runs_from_a_classifier_to_alerts(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    tag = f"guide-{uuid.uuid4().hex[:10]}"
    topics = {
        "DMON_INPUT_TOPIC": f"{tag}-records",
        "DMON_ALERT_TOPIC": f"{tag}-alerts",
        "DMON_DEAD_LETTER_TOPIC": f"{tag}-dead-letters",
        "DMON_DRIFT_TOPIC": f"{tag}-drift",
    }
    env = {
        **os.environ,
        **topics,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DMON_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DMON_GROUP_ID": tag,
        "DMON_METRICS_PORT": "0",  # any free port: other workers may hold 9108
    }
    (tmp_path / "docs").symlink_to(ROOT / "docs")  # the guide runs from a checkout's root
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=1100,
        )
    finally:
        delete_topics(kafka_admin, topics.values())
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, f"exit {done.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    assert "Traceback" not in err and "unexpected error" not in err, err[-3000:]
    assert "sent 286 records" in out
    assert "consumed 286, scored 286" in err, err[-3000:]
    alerts = [line for line in out.splitlines() if "  ALERT  " in line]
    shifted = sum("record shifted-" in line for line in alerts)
    clean = sum("record test-" in line for line in alerts)
    assert shifted + clean == len(alerts) > 0
    # The shifted rows are what the detector is for; held-out clean rows are flagged at
    # about the threshold's 5% (the data and seeds are fixed, so these counts are too).
    assert shifted > 2 * clean, f"{shifted} shifted and {clean} clean rows flagged"
    assert (tmp_path / "my-model" / "detector" / "manifest.json").is_file()
