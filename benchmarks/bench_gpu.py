"""GPU benchmark at full size (issue 9): end to end from files, and where the time goes.

`make bench-gpu` (= `python -m benchmarks.bench_gpu`) on one CUDA GPU, in one process:

1. writes a random-weight VideoLLaMA2.1-7B-AV checkpoint in the released layout to a temporary folder
   (benchmarks/random_checkpoint.py; bf16, seeded, made on the GPU), loads it once with
   `vl2cli.load_model`;
2. end to end through the library (`vl2cli.caption`, 64 new tokens) over copies of the media fixtures'
   MP4s with sound, for `av` and for `video`: (a) the upstream-style loop (one file at a time: one
   library call per file, batch 1, one decoder, so decoding never overlaps the model), (b) vl2's
   defaults, (c) vl2 tuned (bigger batches, more decoders); files/s and the ratio to (a) in this run;
3. a stage breakdown on synthetic preprocessed inputs: the encoders (vision tower + STC over 16-frame
   clips, BEATs + projector over fbanks), then per batch size: encode+splice, prefill, decode ms/step
   and peak GPU memory.

Random weights practically never emit eos, so every answer should run to --max-new-tokens; every
generation is counted and the run is marked invalid (exit status 1) when one stopped short.
Markdown tables go to stdout and the JSON (rewritten after every row, so a run cut short still leaves
its figures) to --json. `--smoke` runs the same code on CPU with a tiny checkpoint of the reference
fixture's sizes and a few media files, in seconds (tests/test_bench_gpu.py); `make bench` runs that
smoke mode too, never the full-size one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import random_checkpoint
from benchmarks.run import BenchResult, format_table

if TYPE_CHECKING:
    import torch

    from vl2cli.model.inputs import MultimodalInput
    from vl2cli.model.videollama2 import VideoLlama2

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The media fixtures' MP4s with a sound track: every file decodes with video and audio, so the `av`
#: and `video` runs see the same files. gpu-notes.md's 120-file run used 24 copies of five fixtures.
E2E_MEDIA = (
    "av_portrait_240x426_30fps_h264_aac_mono44k1_3s.mp4",
    "av_short_160x120_30fps_h264_aac_1p5s.mp4",
    "av_testsrc2_320x240_30fps_h264_aac_stereo_10s.mp4",
    "av_tiny_128x96_30fps_h264_aac_6frames.mp4",
    "av_vfr_320x240_h264_aac_6s.mp4",
)
#: The two smallest of them, for the CPU smoke run.
SMOKE_MEDIA = E2E_MEDIA[1], E2E_MEDIA[3]
#: Upstream's captioning instruction for a video (with or without its sound).
INSTRUCTION = "Describe the video in detail."
MODALITIES = ("av", "video")
ONLY_CHOICES = ("stages", "e2e")
#: Files for the warm-up call before the timed runs (starts the decode-worker server, first kernels).
WARMUP_FILES = 2
#: New tokens of the warm-up generate before the stage rows.
WARMUP_NEW_TOKENS = 2
#: Seeded noise for the synthetic audio: 30 s of it through the real kaldi fbank.
NOISE_AMPLITUDE = 0.1
GIB = 2**30
MS_PER_S = 1000.0
ROUND_S = 3
ROUND_RATE = 2
EXIT_INVALID = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Plan:
    """Everything one benchmark run does; FULL_PLAN and SMOKE_PLAN, adjusted by flags."""

    mode: str
    device: str
    load_dtype: str  # vl2's --dtype
    weights_dtype: str  # what the writer stores: "bfloat16" or "float32"
    shape: random_checkpoint.ModelShape | None  # None: the reference fixture's own (tiny) sizes
    max_new_tokens: int
    files: int
    baseline_files: int
    tuned_batch_size: int
    tuned_workers: int
    stage_batches: tuple[int, ...]
    encoder_videos: int
    encoder_fbanks: int
    modalities: tuple[str, ...]
    media: tuple[str, ...]
    #: generate timings of the stage rows keep the fastest of this many calls (a shared CPU is noisy;
    #: 1 on the GPU, whose timings are steady, to save time). Encoder timings are single calls.
    repeats: int
    #: Full-size runs must give full-length answers to be valid; the tiny smoke model may stop early.
    require_full_length: bool
    seed: int = random_checkpoint.DEFAULT_SEED


#: One H100, under 10 minutes with the checkpoint build (about 45 s for 16 GB).
FULL_PLAN = Plan(
    mode="full", device="cuda", load_dtype="bf16", weights_dtype="bfloat16", shape=random_checkpoint.FULL_AV_SHAPE,
    max_new_tokens=64, files=100, baseline_files=16, tuned_batch_size=32, tuned_workers=12,
    stage_batches=(1, 8, 32, 64), encoder_videos=64, encoder_fbanks=64, modalities=MODALITIES, media=E2E_MEDIA,
    repeats=1, require_full_length=True,
)
#: CPU, tiny model, a handful of files: checks the code paths, measures nothing worth quoting.
SMOKE_PLAN = Plan(
    mode="smoke", device="cpu", load_dtype="fp32", weights_dtype="float32", shape=None,
    max_new_tokens=32, files=2, baseline_files=1, tuned_batch_size=2, tuned_workers=2,
    stage_batches=(1, 2), encoder_videos=2, encoder_fbanks=1, modalities=MODALITIES, media=SMOKE_MEDIA,
    repeats=3, require_full_length=False,
)


@dataclass(frozen=True)
class E2ERun:
    """One way of running the library over the files."""

    name: str
    batch_size: int | None  # None: vl2's default for the device
    workers: int | None
    per_file: bool = False  # one library call per file: decode, then model, then the next file


def media_root() -> Path:
    """The media fixtures folder (`VL2_MEDIA_FIXTURES`, else the set packed in tests/fixtures/)."""
    from tests.fixture_pack import media_root as packed_or_overridden

    return packed_or_overridden()


def smoke_requirements() -> list[Path]:
    """Every fixture file the smoke run reads: the template fixture's files and the smoke media."""
    return random_checkpoint.template_files() + [media_root() / name for name in SMOKE_MEDIA]


# ----------------------------------------------------------------------------- results


@dataclass
class Report:
    """What the run found, as JSON; saved after every row so a run cut short keeps its figures."""

    json_path: Path | None
    data: dict[str, Any] = field(default_factory=dict)
    short_answers: int = 0
    answers: int = 0
    problems: list[str] = field(default_factory=list)

    def save(self) -> None:
        self.data["answers"] = {"checked": self.answers, "shorter_than_max_new_tokens": self.short_answers}
        self.data["problems"] = list(self.problems)
        self.data["valid"] = not self.problems
        if self.json_path is not None:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.json_path.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.data.setdefault(section, []).append(row)
        self.save()


class GenerationCounter:
    """Counts the answers the model gives and how many stopped before `max_new_tokens`.

    It wraps the loaded model's `generate` for the duration of a `with` block (the pipeline calls it),
    so the benchmark sees every answer without touching the pipeline's code.
    """

    def __init__(self, model: "VideoLlama2", max_new_tokens: int) -> None:
        self.model, self.max_new_tokens = model, max_new_tokens
        self.answers = self.short = 0

    def record(self, generations: Sequence[Any]) -> None:
        for generation in generations:
            self.answers += 1
            self.short += generation.stopped_on_eos or len(generation.token_ids) < self.max_new_tokens

    def __enter__(self) -> "GenerationCounter":
        original = self.model.generate

        def counting_generate(*args: Any, **kwargs: Any) -> Any:
            generations = original(*args, **kwargs)
            self.record(generations)
            return generations

        self.model.generate = counting_generate  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        del self.model.generate  # the class's method shows through again


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(call: Callable[[], Any], device: str, repeats: int = 1) -> tuple[float, Any]:
    """Fastest wall time (s) of `repeats` calls, GPU work included, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = call()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


class PeakMemory:
    """Peak GPU memory (GiB) inside a `with` block; None on CPU."""

    def __init__(self, device: str) -> None:
        self.device, self.gib = device, None

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.device.startswith("cuda"):
            import torch

            self.gib = round(torch.cuda.max_memory_allocated() / GIB, ROUND_RATE)


# ----------------------------------------------------------------------------- synthetic inputs


def synthetic_inputs(model: "VideoLlama2", modality: str, count: int, seed: int) -> list["MultimodalInput"]:
    """`count` preprocessed inputs of the model's sizes: one random clip and one fbank of noise, shared.

    The values do not matter for speed; the sizes do: num_frames frames at the tower's resolution and
    the real 30 s kaldi fbank shape.
    """
    import numpy as np
    import torch

    from vl2cli.constants import AUDIO_WINDOW_SAMPLES
    from vl2cli.media.audio import kaldi_fbank, round_to_bfloat16
    from vl2cli.model.inputs import MultimodalInput

    generator = torch.Generator().manual_seed(seed)
    side = model.image_processor_config["size"]["height"]
    clip = torch.randn((model.num_frames, 3, side, side), generator=generator)
    noise = np.random.default_rng(seed).standard_normal(AUDIO_WINDOW_SAMPLES).astype(np.float32) * NOISE_AMPLITUDE
    fbank = round_to_bfloat16(kaldi_fbank(noise))
    pixels = None if modality == "audio" else clip
    audio = fbank if modality in ("audio", "av") else None
    return [MultimodalInput(modality, pixel_values=pixels, fbank=audio) for _ in range(count)]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- stages


def bench_encoders(model: "VideoLlama2", plan: Plan, report: Report) -> None:
    """Vision tower + STC over `encoder_videos` clips, BEATs + projector over `encoder_fbanks` fbanks."""
    import torch

    for modality, count, what in (("video", plan.encoder_videos, "vision tower + STC"),
                                  ("audio", plan.encoder_fbanks, "BEATs + audio projector")):
        items = synthetic_inputs(model, modality, count, plan.seed)
        with torch.inference_mode():
            model.encode(items[:1])  # warm-up: first kernels and allocations
            with PeakMemory(plan.device) as peak:
                seconds, blocks = timed(lambda: model.encode(items), plan.device)
        frames = count * model.num_frames if modality == "video" else None
        report.add("encoders", {
            "component": what, "items": count, "frames": frames, "tokens_per_item": int(blocks[0].shape[0]),
            "s": round(seconds, ROUND_S), "items_per_s": round(count / seconds, ROUND_RATE),
            "peak_gpu_gib": peak.gib,
        })
        del blocks


class CachedEncoding:
    """Inside the block the model's `encode` hands back blocks computed beforehand.

    `generate` encodes its inputs first; with the encoders already timed on their own, caching them
    takes their cost (and, on a shared CPU, their noise) out of the prefill and decode figures. `calls`
    tells whether generate went through `encode` at all.
    """

    def __init__(self, model: "VideoLlama2", blocks: list[Any]) -> None:
        self.model, self.blocks, self.calls = model, blocks, 0

    def _encode(self, items: Sequence[Any]) -> list[Any]:
        self.calls += 1
        return self.blocks[: len(items)]

    def __enter__(self) -> "CachedEncoding":
        self.model.encode = self._encode  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        del self.model.encode


def bench_llm(model: "VideoLlama2", plan: Plan, report: Report) -> None:
    """Per modality and batch size: encode, prefill, decode ms/step, peak memory.

    encode is `model.encode` of the batch; then, with those blocks cached, prefill is `generate` with
    one new token (splice + prefill + the first token) and decode ms/step is what `generate` with
    max_new_tokens spends beyond that, per further token.
    """
    import torch

    for modality in plan.modalities:
        items = synthetic_inputs(model, modality, max(plan.stage_batches), plan.seed)
        instructions = [INSTRUCTION] * len(items)
        model.generate(items[:1], instructions[:1], max_new_tokens=WARMUP_NEW_TOKENS)
        for batch in plan.stage_batches:
            row: dict[str, Any] = {"modality": modality, "batch": batch, "new_tokens": plan.max_new_tokens}
            try:
                with PeakMemory(plan.device) as peak:
                    row.update(_llm_row(model, plan, items[:batch], instructions[:batch]))
            except torch.cuda.OutOfMemoryError as exc:
                row["error"] = f"out of memory: {exc}".splitlines()[0]
                report.problems.append(f"llm {modality} batch {batch}: out of memory")
            row["peak_gpu_gib"] = peak.gib
            if plan.device.startswith("cuda"):
                torch.cuda.empty_cache()
            report.add("llm", row)


def _llm_row(model: "VideoLlama2", plan: Plan, items: list["MultimodalInput"], instructions: list[str]) -> dict[str, Any]:
    import torch

    with torch.inference_mode():
        encode_s, blocks = timed(lambda: model.encode(items), plan.device)
    with CachedEncoding(model, blocks) as cached:
        with torch.inference_mode():
            prompt_tokens = int(model.prepare_inputs(items, instructions)[0].shape[1])
        first_s, _ = timed(lambda: model.generate(items, instructions, max_new_tokens=1), plan.device, plan.repeats)
        generate_s, generations = timed(
            lambda: model.generate(items, instructions, max_new_tokens=plan.max_new_tokens), plan.device, plan.repeats)
    counter = GenerationCounter(model, plan.max_new_tokens)
    counter.record(generations)
    total_s = encode_s + generate_s
    row = {
        "prompt_tokens": prompt_tokens,
        "encode_s": round(encode_s, ROUND_S),
        "prefill_s": round(first_s, ROUND_S),
        "decode_ms_per_step": round((generate_s - first_s) / (plan.max_new_tokens - 1) * MS_PER_S, ROUND_RATE),
        "total_s": round(total_s, ROUND_S),
        "items_per_s": round(len(items) / total_s, ROUND_RATE),
        "answers": counter.answers,
        "short_answers": counter.short,
    }
    if not cached.calls:
        row["note"] = "generate did not call model.encode: prefill and decode include the encoders"
    return row


# ----------------------------------------------------------------------------- end to end


def copy_media(sources: Sequence[Path], count: int, folder: Path) -> list[Path]:
    """`count` files cycling through `sources`, each a real copy with its own name."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        source = sources[index % len(sources)]
        target = folder / f"{index:04d}_{source.name}"
        if not target.exists():
            shutil.copyfile(source, target)
        files.append(target)
    return files


def e2e_runs(plan: Plan) -> list[E2ERun]:
    cores = os.cpu_count() or 1
    return [
        E2ERun("upstream-style loop", 1, 1, per_file=True),
        E2ERun("vl2 defaults", None, None),
        E2ERun("vl2 tuned", plan.tuned_batch_size, min(plan.tuned_workers, cores)),
    ]


def _caption(model: "VideoLlama2", files: Sequence[Path], plan: Plan, modality: str, run: E2ERun) -> list[dict[str, Any]]:
    import vl2cli

    if run.per_file:
        records = []
        for path in files:
            records += vl2cli.caption(model, [path], max_new_tokens=plan.max_new_tokens, modality=modality,
                                      batch_size=run.batch_size, workers=run.workers)
        return records
    return vl2cli.caption(model, list(files), max_new_tokens=plan.max_new_tokens, modality=modality,
                          batch_size=run.batch_size, workers=run.workers)


def bench_e2e(model: "VideoLlama2", plan: Plan, files: list[Path], report: Report) -> None:
    """Each run over the files (the upstream-style loop over the first `baseline_files`), per modality."""
    import vl2cli

    for modality in plan.modalities:
        warmup = files[:WARMUP_FILES]
        vl2cli.caption(model, warmup, max_new_tokens=WARMUP_NEW_TOKENS, modality=modality, batch_size=len(warmup),
                       workers=1)
        baseline_rate = None
        for run in e2e_runs(plan):
            subset = files[: plan.baseline_files] if run.per_file else files
            with GenerationCounter(model, plan.max_new_tokens) as counter, PeakMemory(plan.device) as peak:
                seconds, records = timed(lambda: _caption(model, subset, plan, modality, run), plan.device)
            errors = [r for r in records if r.get("error")]
            rate = len(subset) / seconds
            baseline_rate = baseline_rate or rate
            report.answers += counter.answers
            report.short_answers += counter.short
            if errors:
                report.problems.append(f"e2e {modality} {run.name}: {len(errors)} file(s) failed, "
                                       f"first: {errors[0]['error']}")
            if counter.answers != len(subset) - len(errors):
                report.problems.append(f"e2e {modality} {run.name}: {counter.answers} answers counted for "
                                       f"{len(subset)} files (does the pipeline still call model.generate?)")
            model_ms = [r["timings_ms"].get("model") for r in records if r.get("timings_ms")]
            report.add("e2e", {
                "modality": modality, "run": run.name, "batch_size": run.batch_size, "workers": run.workers,
                "files": len(subset), "s": round(seconds, ROUND_S), "files_per_s": round(rate, ROUND_RATE),
                "ratio_to_upstream_loop": round(rate / baseline_rate, ROUND_RATE),
                "model_s": round(sum(ms for ms in model_ms if ms) / MS_PER_S, ROUND_S),
                "errors": len(errors), "answers": counter.answers, "short_answers": counter.short,
                "peak_gpu_gib": peak.gib,
            })


# ----------------------------------------------------------------------------- the run


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None  # a copy of the tree without .git
    return out.stdout.strip() or None


def _weights_dtype(name: str) -> "torch.dtype":
    import torch

    return getattr(torch, name)


def _outside_repo(path: Path) -> Path:
    resolved = path.resolve()
    if resolved == REPO_ROOT or REPO_ROOT in resolved.parents:
        raise SystemExit(f"--workdir {path}: inside the repository; the checkpoint's gigabytes must never be "
                         "committed, pick a folder elsewhere (e.g. /tmp/vl2-bench).")
    return resolved


def run_plan(plan: Plan, *, only: str | None, workdir: Path | None, checkpoint: Path | None,
             json_path: Path | None, argv: Sequence[str] = ()) -> Report:
    """Build (or reuse) the checkpoint, load it, run the chosen parts; returns the report."""
    import torch
    import transformers

    import vl2cli

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a network
    started = time.perf_counter()
    report = Report(json_path)
    report.data.update(
        benchmark="bench_gpu", mode=plan.mode, device=_device_name(plan.device), commit=_commit(),
        versions={"python": platform.python_version(), "torch": torch.__version__,
                  "transformers": transformers.__version__, "vl2": vl2cli.__version__},
        argv=list(argv), plan={k: v for k, v in asdict(plan).items() if k != "shape"},
    )
    scratch = Path(tempfile.mkdtemp(prefix="vl2-bench-gpu-")) if workdir is None else _outside_repo(workdir)
    try:
        if checkpoint is None:
            shape = plan.shape or random_checkpoint.shape_of_template()
            written = random_checkpoint.write_checkpoint(scratch, shape, dtype=_weights_dtype(plan.weights_dtype),
                                                         device=plan.device, seed=plan.seed)
            checkpoint = written.folder
            report.data["checkpoint"] = {"path": str(written.folder), "parameters": written.parameters,
                                         "bytes": written.bytes, "shards": written.shards,
                                         "build_s": round(written.seconds, ROUND_S), "reused": written.reused,
                                         "shape": asdict(shape)}
            random_checkpoint.check_high_ids_decode(written.folder, shape.vocab_size)
        else:
            report.data["checkpoint"] = {"path": str(checkpoint), "reused": True}
        report.save()
        load_s, model = timed(lambda: vl2cli.load_model(str(checkpoint), device=plan.device, dtype=plan.load_dtype),
                              plan.device)
        report.data.update(load_s=round(load_s, ROUND_S), encoder_backend=model.encoders.name)
        report.save()
        if only in (None, "e2e"):
            sources = [media_root() / name for name in plan.media]
            files = copy_media(sources, plan.files, scratch / "media")
            bench_e2e(model, plan, files, report)
        if only in (None, "stages"):
            bench_encoders(model, plan, report)
            bench_llm(model, plan, report)
        if plan.device.startswith("cuda"):
            report.data["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / GIB, ROUND_RATE)
        for row in report.data.get("llm", []):
            report.answers += row.get("answers", 0)
            report.short_answers += row.get("short_answers", 0)
        if plan.require_full_length and report.short_answers:
            report.problems.append(f"{report.short_answers} of {report.answers} answers stopped before "
                                   f"{plan.max_new_tokens} tokens: output lengths differ, figures not comparable")
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    report.data["wall_s"] = round(time.perf_counter() - started, ROUND_S)
    report.save()
    return report


# ----------------------------------------------------------------------------- tables


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def tables(data: dict[str, Any]) -> list[BenchResult]:
    """The report as Markdown-ready tables (what docs/benchmarks.md quotes)."""
    title = f"GPU benchmark ({data.get('mode')}): {data.get('device')}, commit {data.get('commit')}"
    checkpoint = data.get("checkpoint", {})
    if "parameters" in checkpoint:
        made = (f"{checkpoint['parameters']} parameters, {checkpoint['bytes']} bytes in {checkpoint['shards']} shards, "
                f"built in {checkpoint['build_s']} s (reused: {checkpoint['reused']})")
    else:
        made = f"given folder {checkpoint.get('path')}"
    notes = [
        f"checkpoint: {made}; load {data.get('load_s')} s; encoder backend {data.get('encoder_backend')}",
        f"answers checked {data['answers']['checked']}, shorter than max_new_tokens: "
        f"{data['answers']['shorter_than_max_new_tokens']}; peak GPU memory {data.get('peak_gpu_gib')} GiB; "
        f"wall {data.get('wall_s')} s",
        f"versions: {data.get('versions')}",
    ] + [f"PROBLEM: {p}" for p in data.get("problems", [])]
    results = []
    e2e_rows = [[r["modality"], r["run"], _cell(r["batch_size"]), _cell(r["workers"]), str(r["files"]), str(r["s"]),
                 str(r["files_per_s"]), f"{r['ratio_to_upstream_loop']}×", str(r["model_s"]), str(r["short_answers"]),
                 str(r["errors"])] for r in data.get("e2e", [])]
    if e2e_rows:
        results.append(BenchResult(
            f"{title} — end to end from files", ["modality", "run", "batch", "workers", "files", "s", "files/s",
                                                "vs upstream loop", "model s", "short answers", "errors"],
            e2e_rows, notes + ["upstream-style loop: one library call per file (batch 1, 1 decoder, no overlap), "
                               "on the first files only; batch/workers '–' = vl2's defaults for the device"]))
        notes = []
    encoder_rows = [[r["component"], str(r["items"]), _cell(r["frames"]), str(r["tokens_per_item"]), str(r["s"]),
                     str(r["items_per_s"]), _cell(r["peak_gpu_gib"])] for r in data.get("encoders", [])]
    if encoder_rows:
        results.append(BenchResult(f"{title} — encoders (synthetic inputs)",
                                   ["component", "items", "frames", "tokens/item", "s", "items/s", "peak GiB"],
                                   encoder_rows, notes))
        notes = []
    llm_rows = [[r["modality"], str(r["batch"]), _cell(r.get("prompt_tokens")), _cell(r.get("encode_s")),
                 _cell(r.get("prefill_s")), _cell(r.get("decode_ms_per_step")), _cell(r.get("total_s")),
                 _cell(r.get("items_per_s")), _cell(r.get("peak_gpu_gib")), r.get("error", r.get("note", ""))]
                for r in data.get("llm", [])]
    if llm_rows:
        tokens = data["plan"]["max_new_tokens"]
        results.append(BenchResult(
            f"{title} — model stages (synthetic inputs)",
            ["modality", "batch", "prompt tokens", "encode s", "prefill s", "decode ms/step",
             f"total s ({tokens} tokens)", "items/s", "peak GiB", "note"],
            llm_rows, notes + ["prefill = generate with 1 new token, encoders cached (splice + prefill + first "
                               f"token); decode ms/step = (generate with {tokens} - with 1) / {tokens - 1}; "
                               "total = encode + generate"]))
    return results


# ----------------------------------------------------------------------------- entry points


def _batches(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _modalities(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = set(chosen) - set(MODALITIES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown modality {sorted(unknown)}; choose from {', '.join(MODALITIES)}")
    return chosen


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny checkpoint on CPU, a few files (the test suite's run)")
    parser.add_argument("--only", choices=ONLY_CHOICES, help="run only the stage breakdown or only end to end")
    parser.add_argument("--files", type=int, help="files for the end-to-end runs (copies of the media fixtures)")
    parser.add_argument("--baseline-files", type=int, help="files for the upstream-style loop (a subset: it is slow)")
    parser.add_argument("--batch-size", type=int, help="the tuned run's batch size")
    parser.add_argument("--workers", type=int, help="the tuned run's decode workers")
    parser.add_argument("--max-new-tokens", type=int, help="answer length (random weights never stop earlier)")
    parser.add_argument("--stage-batches", type=_batches, help="comma-separated batch sizes for the stage breakdown")
    parser.add_argument("--modalities", type=_modalities, help="comma-separated, from: " + ", ".join(MODALITIES))
    parser.add_argument("--checkpoint", type=Path, help="use this already-written checkpoint folder (no build)")
    parser.add_argument("--workdir", type=Path, help="keep checkpoint and media copies here (reused when the "
                        "same checkpoint is already there); default: a temporary folder, removed afterwards")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    return parser.parse_args(list(argv))


def plan_from_args(args: argparse.Namespace) -> Plan:
    plan = SMOKE_PLAN if args.smoke else FULL_PLAN
    overrides = {"files": args.files, "baseline_files": args.baseline_files, "tuned_batch_size": args.batch_size,
                 "tuned_workers": args.workers, "max_new_tokens": args.max_new_tokens,
                 "stage_batches": args.stage_batches, "modalities": args.modalities}
    return replace(plan, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    plan = plan_from_args(args)
    if plan.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("bench_gpu: no CUDA GPU here; `--smoke` runs the same code on CPU with a tiny model.",
                  file=sys.stderr)
            return EXIT_USAGE
    report = run_plan(plan, only=args.only, workdir=args.workdir, checkpoint=args.checkpoint, json_path=args.json,
                      argv=argv)
    for result in tables(report.data):
        print(format_table(result), flush=True)
        print()
    if report.problems:
        print("bench_gpu: figures NOT valid: " + "; ".join(report.problems), file=sys.stderr)
        return EXIT_INVALID
    return 0


def run() -> list[BenchResult]:
    """`make bench` (CPU): the smoke mode, so the GPU benchmark's code keeps working; skipped without fixtures."""
    missing = [str(p) for p in smoke_requirements() if not p.is_file()]
    if missing:
        return [BenchResult("GPU benchmark (smoke): skipped", ["missing fixture"], [[m] for m in missing])]
    report = run_plan(SMOKE_PLAN, only=None, workdir=None, checkpoint=None, json_path=None)
    return tables(report.data)


if __name__ == "__main__":
    sys.exit(main())
