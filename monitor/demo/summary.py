"""The demo's verdict: the alert topic's flagged ids held against what was really sent.

Harmful and harmless follow the method document (harmful: the corruption flipped a
correct prediction; harmless: right on both); clean records flagged are false positives.
Alerts are counted once per id (at-least-once delivery may repeat one), and alerts whose
id this run never sent are counted apart, so a mix-up cannot inflate the rates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.demo.pacing import SentLog
from monitor.demo.traffic import CLEAN, MALFORMED


@dataclass
class Count:
    sent: int = 0
    flagged: int = 0

    @property
    def rate(self) -> float:
        return self.flagged / self.sent if self.sent else 0.0

    def text(self) -> str:
        return f"{self.flagged:5d} / {self.sent:<5d} ({self.rate:6.1%})"

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "flagged": self.flagged, "rate": self.rate}


@dataclass
class DemoSummary:
    harmful: Count = field(default_factory=Count)
    harmless: Count = field(default_factory=Count)
    clean: Count = field(default_factory=Count)
    neither: Count = field(default_factory=Count)
    by_kind: dict[str, Count] = field(default_factory=dict)
    harmful_by_kind: dict[str, Count] = field(default_factory=dict)
    flagged_ids: set[str] = field(default_factory=set)
    alerts_read: int = 0
    unknown_alerts: int = 0
    malformed_sent: int = 0
    dead_letters: int = 0

    @classmethod
    def tally(cls, sent: SentLog, alerts: list[bytes], dead_letters: int) -> DemoSummary:
        """Count, per group and per corruption, how many sent records were alerted on."""
        s = cls(alerts_read=len(alerts), malformed_sent=sent.malformed, dead_letters=dead_letters)
        ids = Counter(str(orjson.loads(a).get("id")) for a in alerts)
        s.flagged_ids = {i for i in ids if i in sent.truth}
        s.unknown_alerts = sum(n for i, n in ids.items() if i not in sent.truth)
        for record_id, (kind, harmful) in sent.truth.items():
            if kind == MALFORMED:
                continue
            flagged = record_id in s.flagged_ids
            group = s._group(kind, harmful)
            for count in (group, s.by_kind.setdefault(kind, Count())):
                count.sent += 1
                count.flagged += flagged
            if harmful is True:
                harm = s.harmful_by_kind.setdefault(kind, Count())
                harm.sent += 1
                harm.flagged += flagged
        return s

    def _group(self, kind: str, harmful: bool | None) -> Count:
        if kind == CLEAN:
            return self.clean
        if harmful is None:
            return self.neither
        return self.harmful if harmful else self.harmless

    @property
    def flagged(self) -> int:
        return len(self.flagged_ids)

    @property
    def duplicate_alerts(self) -> int:
        return self.alerts_read - self.unknown_alerts - self.flagged

    def lines(self) -> list[str]:
        out = [
            f"  harmful corrupted records flagged   {self.harmful.text()}   "
            "(the corruption flipped a correct prediction)",
            f"  harmless corrupted records flagged  {self.harmless.text()}   "
            "(the classifier was still right)",
            f"  clean records flagged               {self.clean.text()}   (false positives)",
            f"  dead letters                        {self.dead_letters:5d}   "
            f"({self.malformed_sent} malformed records sent)",
            "",
            "  by corruption          sent  flagged          harmful flagged",
        ]
        kinds = sorted(self.by_kind, key=lambda k: (k != CLEAN, k))
        for kind in kinds:
            count = self.by_kind[kind]
            harm = self.harmful_by_kind.get(kind)
            harm_text = f"{harm.flagged:4d} / {harm.sent:<4d} ({harm.rate:6.1%})" if harm else ""
            row = (
                f"  {kind:20s} {count.sent:6d} {count.flagged:6d} ({count.rate:6.1%})   {harm_text}"
            )
            out.append(row.rstrip())
        if self.neither.sent:
            out.append(
                f"  ({self.neither.sent} corrupted digits the classifier got wrong even clean "
                f"are neither harmful nor harmless; {self.neither.flagged} flagged)"
            )
        if self.duplicate_alerts or self.unknown_alerts:
            out.append(
                f"  alerts read {self.alerts_read}: {self.duplicate_alerts} repeated, "
                f"{self.unknown_alerts} for ids this run did not send"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "harmful": self.harmful.as_dict(),
            "harmless": self.harmless.as_dict(),
            "clean": self.clean.as_dict(),
            "neither": self.neither.as_dict(),
            "by_corruption": {k: v.as_dict() for k, v in sorted(self.by_kind.items())},
            "harmful_by_corruption": {
                k: v.as_dict() for k, v in sorted(self.harmful_by_kind.items())
            },
            "flagged": self.flagged,
            "alerts_read": self.alerts_read,
            "duplicate_alerts": self.duplicate_alerts,
            "unknown_alerts": self.unknown_alerts,
            "malformed_sent": self.malformed_sent,
            "dead_letters": self.dead_letters,
        }
