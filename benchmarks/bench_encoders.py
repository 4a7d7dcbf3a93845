"""Encoder latency, torch vs onnxruntime (CPU), on the tiny reference fixtures.

Tiny random models, so the figures show per-call overhead and the relative cost of the backends,
not real-model throughput. `VL2_REFERENCE_FIXTURES` selects another fixture folder.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.run import BenchResult

REPEATS = 5
BATCH = 2
ROOT = Path(__file__).resolve().parents[1]


def _fixtures() -> list[Path]:
    root = Path(os.environ.get("VL2_REFERENCE_FIXTURES") or ROOT.parent / "shared" / "fixtures" / "reference")
    return sorted(p for p in root.iterdir() if (p / "checkpoint").is_dir()) if root.is_dir() else []


def _median_ms(call, x) -> float:
    call(x)  # warm-up: first-call allocations and onnxruntime's lazy initialisation
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call(x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def run() -> BenchResult:
    from vl2cli.exporting.components import component_specs, validation_inputs
    from vl2cli.exporting.pipeline import export_model
    from vl2cli.model.videollama2 import VideoLlama2
    from vl2cli.runtime.selection import choose_encoder_backend

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for fixture in _fixtures():
            os.environ["HF_HUB_CACHE"], os.environ["HF_HUB_OFFLINE"] = str(fixture / "hub"), "1"
            model = VideoLlama2.from_pretrained(str(fixture / "checkpoint"), device="cpu", dtype="fp32")
            export_model(model, Path(scratch) / "export", build_engines=False)
            onnx = choose_encoder_backend(model.torch_encoders, "onnxruntime", model=model, export_dir=Path(scratch) / "export")
            calls = {"vision_tower": "encode_frames", "connector": "connect", "audio_encoder": "encode_audio"}
            for name, spec in component_specs(model).items():
                (x,) = validation_inputs(model, spec, (BATCH,), seed=0)
                torch_ms = _median_ms(getattr(model.torch_encoders, calls[name]), x)
                onnx_ms = _median_ms(getattr(onnx, calls[name]), x)
                rows.append([fixture.name, name, str(tuple(x.shape)), f"{torch_ms:.1f}", f"{onnx_ms:.1f}"])
    return BenchResult(
        "Encoders: torch vs onnxruntime (CPU), tiny fixtures",
        ["fixture", "component", "input", "torch ms", "onnxruntime ms"],
        rows,
        [f"median of {REPEATS} calls after one warm-up; fp32; CPU threads shared with the machine"],
    )
