"""The full-size encoder benchmark (a GPU job) keeps working: its tiny smoke sizes on the CPU."""
from __future__ import annotations

import pytest

from benchmarks.bench_encoders import DEFAULT_VARIANTS, SMOKE, VARIANTS, format_full_size, full_size

#: Different schedules of the same fp32 maths: outputs agree to rounding.
FP32_MIN_COSINE = 0.99999


def test_default_variants_exist_and_end_with_the_cuda_default():
    assert set(DEFAULT_VARIANTS) <= set(VARIANTS)
    assert DEFAULT_VARIANTS[0] == "0658a2a"
    last = VARIANTS[DEFAULT_VARIANTS[-1]]
    assert last.compile and last.frames_per_call is None and last.tower_attention == "sdpa"


def test_smoke_run_reports_every_variant_with_agreeing_outputs():
    variants = ("0658a2a", "eager-attention", "sdpa+cl+derived-chunk")
    report = full_size(SMOKE, variants, device="cpu", dtype_name="fp32", repeats=1)
    assert [r["variant"] for r in report["vision"]] == list(variants) == [r["variant"] for r in report["audio"]]
    for row in report["vision"] + report["audio"]:
        assert row["cosine"] >= FP32_MIN_COSINE, row
    for row in report["vision"]:
        assert row["total_s"] == pytest.approx(row["tower_s"] + row["stc_s"])
        assert row["frames_per_call_used"] == 64  # the CPU chunk, derived or not
    assert "compile_failed" not in report
    tables = format_full_size(report)
    assert tables.count("| 0658a2a |") == 2 and "1.00x" in tables
