"""Records as a person reads them on a terminal: `path: caption`, `path: answer`, a label table.

JSON lines are for programs (a pipe, a file, `--json`); on a terminal the same run prints this instead.
Error records print nothing here: their one `vl2: failed: ...` line is on stderr already.
"""
from __future__ import annotations

from typing import Any

from .console import one_line

#: Decimals of a label's probability in the table.
PROBABILITY_DECIMALS = 3


def _where(record: dict[str, Any]) -> str:
    """The file, and the window of it for a segment's record."""
    path = one_line(record["path"])
    segment = record.get("segment")
    if segment is None:
        return path
    return f"{path} [{segment['start_s']:.1f}-{segment['end_s']:.1f} s]"


def readable_text(record: dict[str, Any], *, with_question: bool = False) -> str | None:
    """The lines to print for one record (None: nothing, an error record). `with_question`: the run asks
    several questions, so each answer says which one it answers."""
    if record.get("error") is not None:
        return None
    where = _where(record)
    scores = record.get("label_scores")
    if scores is not None:
        ranked = sorted(scores, key=lambda score: score["probability"], reverse=True)
        kept = record.get("top_k") or [score["label"] for score in ranked]
        rows = [f"  {score['probability']:.{PROBABILITY_DECIMALS}f}  {one_line(score['label'])}"
                for score in ranked if score["label"] in kept]
        return "\n".join([f"{where}:", *rows])
    output = record.get("output") or ""
    if with_question:
        return f"{where}: {one_line(record.get('prompt') or '')}\n  {output}"
    return f"{where}: {output}"


__all__ = ["readable_text"]
