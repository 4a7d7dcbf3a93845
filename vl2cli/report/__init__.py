"""`vl2 report`: a run's JSONL as one self-contained HTML page to look through (a layer above output)."""
from .page import build_report, write_report

__all__ = ["build_report", "write_report"]
