"""The GPU benchmark's code paths, run in its CPU smoke mode on a tiny checkpoint, plus its bookkeeping."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from benchmarks import bench_gpu
from benchmarks.bench_gpu import FULL_PLAN, MODALITIES, SMOKE_PLAN, GenerationCounter, main

RUN_NAMES = [run.name for run in bench_gpu.e2e_runs(SMOKE_PLAN)]
#: The issue's floor for the end-to-end runs and the frames the encoder stage must push through.
MIN_E2E_FILES = 100
ENCODER_FRAMES = 1024
FULL_LENGTH = 64


def _missing_smoke_fixtures() -> list[str]:
    return [str(p) for p in bench_gpu.smoke_requirements() if not p.is_file()]


@pytest.mark.slow
@pytest.mark.skipif(bool(_missing_smoke_fixtures()), reason="smoke fixtures missing: "
                    + ", ".join(_missing_smoke_fixtures()[:3]))
def test_smoke_run_reports_every_row_with_positive_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--smoke", "--json", str(out), "--workdir", str(tmp_path / "work")]) == 0
    data = json.loads(out.read_text())
    assert data["mode"] == "smoke" and data["valid"] and data["problems"] == []
    assert data["checkpoint"]["parameters"] > 0 and data["load_s"] > 0

    e2e = {(r["modality"], r["run"]): r for r in data["e2e"]}
    assert set(e2e) == {(m, name) for m in MODALITIES for name in RUN_NAMES}
    for (modality, name), row in e2e.items():
        expected_files = SMOKE_PLAN.baseline_files if name == RUN_NAMES[0] else SMOKE_PLAN.files
        assert row["files"] == expected_files == row["answers"], (modality, name)
        assert row["errors"] == 0
        assert row["s"] > 0 and row["files_per_s"] > 0 and row["model_s"] > 0 and row["ratio_to_upstream_loop"] > 0
    assert all(e2e[(m, RUN_NAMES[0])]["ratio_to_upstream_loop"] == 1.0 for m in MODALITIES)

    encoders = {r["component"]: r for r in data["encoders"]}
    assert len(encoders) == 2
    for row in encoders.values():
        assert row["s"] > 0 and row["items_per_s"] > 0 and row["tokens_per_item"] > 0

    llm = {(r["modality"], r["batch"]): r for r in data["llm"]}
    assert set(llm) == {(m, b) for m in MODALITIES for b in SMOKE_PLAN.stage_batches}
    for (modality, batch), row in llm.items():
        assert "error" not in row and "note" not in row, row
        assert row["answers"] == batch
        for figure in ("prompt_tokens", "encode_s", "prefill_s", "decode_ms_per_step", "total_s", "items_per_s"):
            assert row[figure] > 0, (modality, batch, figure, row[figure])
    assert llm[("av", 1)]["prompt_tokens"] > llm[("video", 1)]["prompt_tokens"]  # the audio tokens are spliced in

    checked = sum(r["answers"] for r in data["e2e"]) + sum(r["answers"] for r in data["llm"])
    assert data["answers"]["checked"] == checked
    printed = capsys.readouterr().out
    assert "end to end from files" in printed and "model stages" in printed and "encoders" in printed


@dataclass
class _Answer:
    token_ids: list[int]
    stopped_on_eos: bool


class _FakeModel:
    def __init__(self, answers: list[_Answer]) -> None:
        self.answers = answers

    def generate(self, inputs, instructions, **kwargs):
        return self.answers


def test_generation_counter_counts_short_answers_and_restores_generate():
    full, stopped = _Answer([1] * FULL_LENGTH, False), _Answer([1, 2, 3], True)
    model = _FakeModel([full, stopped, _Answer([1] * (FULL_LENGTH - 1), False)])
    with GenerationCounter(model, FULL_LENGTH) as counter:
        assert model.generate([], []) == model.answers
    assert (counter.answers, counter.short) == (3, 2)
    assert model.generate.__func__ is _FakeModel.generate  # the wrapper is gone


def test_full_plan_covers_the_issue():
    assert FULL_PLAN.device == "cuda" and FULL_PLAN.load_dtype == "bf16" and FULL_PLAN.require_full_length
    assert FULL_PLAN.files >= MIN_E2E_FILES and FULL_PLAN.max_new_tokens == FULL_LENGTH
    assert FULL_PLAN.stage_batches == (1, 8, 32, 64) and set(FULL_PLAN.modalities) == {"av", "video"}
    assert FULL_PLAN.encoder_videos * FULL_PLAN.shape.num_frames == ENCODER_FRAMES
    assert FULL_PLAN.baseline_files < FULL_PLAN.files


def test_workdir_inside_the_repository_is_refused():
    with pytest.raises(SystemExit, match="inside the repository"):
        bench_gpu._outside_repo(bench_gpu.REPO_ROOT / "scratch")


def test_without_a_gpu_the_full_run_says_so(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([]) == bench_gpu.EXIT_USAGE
    assert "--smoke" in capsys.readouterr().err
