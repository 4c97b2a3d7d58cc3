"""What arrived through each way in (DICOM, DROP, HTTP, CLI) since a moment: for `dicomd status`."""

from __future__ import annotations

import json
from typing import Any

from dicomd.catalog.engine import Engine

WAYS_IN = ("DICOM", "DROP", "HTTP", "CLI")


def _kind(source: str) -> str:
    """`DICOM:AE@10.0.0.5` -> `DICOM`: the way in, never the sender (which may name a person)."""
    return (source or "").split(":", 1)[0] or "other"


class Arrivals(Engine):
    def arrivals(self, since: float) -> dict[str, dict[str, int]]:
        """way in -> {instances, sessions, quarantined, refused} since ``since`` (epoch seconds).
        Instances count in the prearchive and in the archive (they keep their arrival time)."""
        counts: dict[str, dict[str, Any]] = {
            way: {"instances": 0, "sessions": set(), "quarantined": 0, "refused": 0} for way in WAYS_IN}

        def slot(way: str) -> dict[str, Any]:
            return counts.setdefault(way, {"instances": 0, "sessions": set(), "quarantined": 0, "refused": 0})

        reader = self.reader()
        for source, session_id in reader.execute(
                "SELECT source, session_id FROM instances WHERE received_at >= ?", (since,)):
            entry = slot(_kind(source))
            entry["instances"] += 1
            entry["sessions"].add(session_id)
        for (source,) in reader.execute("SELECT source FROM quarantine WHERE at >= ?", (since,)):
            slot(_kind(source))["quarantined"] += 1
        for (detail,) in reader.execute("SELECT detail FROM events WHERE kind = 'refused' AND at >= ?", (since,)):
            slot(_kind(str(json.loads(detail or "{}").get("source", ""))))["refused"] += 1
        return {way: {**entry, "sessions": len(entry["sessions"])} for way, entry in counts.items()}
