"""Ingest benchmark: vl2's media loading against what upstream VideoLLaMA 2 does, on the media fixtures.

Upstream baseline (per file, one process): decord `VideoReader(num_threads=1).get_batch`, PIL frames
through transformers' PIL image processor, the audio track through an `ffmpeg` CLI subprocess, clip
selection and the kaldi fbank. torchaudio cannot be installed beside torch 2.14, so the baseline's
fbank is vl2's (same maths as torchaudio's); that stage is therefore equal in both columns.

Measured: single-file latency (vl2 with 1 and with 2 threads, interleaved with the baseline run by
run so load from other jobs hits all three alike), and batch throughput in steady state (the fixture
list repeated, after one warm-up pass; pool start-up reported apart) for DecodePool and for the
baseline in one and in two processes. Outputs are asserted: vl2 vs baseline pixels within 1e-5 (or
the known Pillow pass-order difference, see `_compare`), fbank within the ffmpeg-vs-PyAV decoder
tolerance, and vl2's threaded and pooled outputs bit-equal to its single-threaded ones.
"""
from __future__ import annotations

from collections.abc import Iterator

import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from benchmarks.run import BenchResult
from tests.fixture_pack import media_root
from vl2cli.constants import AUDIO_WINDOW_SAMPLES, BEATS_FBANK_STD
from vl2cli.media.audio import INT16_SCALE, kaldi_fbank, round_to_bfloat16, video_audio_waveform
from vl2cli.media.image import ImageProcessorSpec
from vl2cli.media.loader import LoadedMedia, MediaSpec, load_media
from vl2cli.media.parallel import default_media_threads
from vl2cli.media.probe import probe_media
from vl2cli.media.sampling import sample_frame_indices
from vl2cli.media.workers import DecodePool

REPO_ROOT = Path(__file__).resolve().parents[1]
MEDIA = media_root().resolve()  # VL2_MEDIA_FIXTURES, else the set packed in tests/fixtures/
NUM_FRAMES = 16  # VideoLLaMA2.1-7B-AV
#: Runs per file for the latency medians (VL2_BENCH_REPEATS overrides).
REPEATS = int(os.environ.get("VL2_BENCH_REPEATS", "5"))
#: Times the fixture list is repeated for the steady-state throughput runs (VL2_BENCH_PASSES overrides).
THROUGHPUT_PASSES = int(os.environ.get("VL2_BENCH_PASSES", "4"))
SIGLIP384 = {"image_processor_type": "SiglipImageProcessor", "size": {"height": 384, "width": 384}, "resample": 3,
             "rescale_factor": 1 / 255, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
PIXEL_TOLERANCE = 1e-5
#: Normalised-fbank bound between the ffmpeg CLI's and PyAV's audio (see tests/test_media_audio.py).
DECODER_FBANK_TOLERANCE = 0.1
STAGES = ("decode", "preprocess", "audio_decode", "fbank")
_MS = 1000.0
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}

Outputs = tuple[torch.Tensor, torch.Tensor | None]
Loader = Callable[[Path], tuple[dict[str, float], torch.Tensor, torch.Tensor | None]]


def _media_files() -> list[Path]:
    files = []
    for path in sorted(MEDIA.iterdir()):
        if path.suffix in {".md", ".json"} or path.is_dir() or path.name.startswith("broken_"):
            continue
        if probe_media(path).kind in ("video", "image"):
            files.append(path)
    return files


def _av_spec() -> MediaSpec:
    return MediaSpec(num_frames=NUM_FRAMES, image=ImageProcessorSpec.from_config(SIGLIP384), want_audio=True)


class UpstreamBaseline:
    """What upstream's `process_video(..., va=True)` / `process_image` do, stage by stage."""

    def __init__(self) -> None:
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        kwargs = {k: v for k, v in SIGLIP384.items() if k != "image_processor_type"}
        self.processor = SiglipImageProcessorPil(**kwargs)

    def ffmpeg_audio(self, path: Path) -> np.ndarray:
        command = ["ffmpeg", "-nostdin", "-i", str(path), "-vn", "-acodec", "pcm_s16le", "-ac", "1", "-ar", "16000",
                   "-f", "s16le", "-"]
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            return np.zeros(AUDIO_WINDOW_SAMPLES, dtype=np.float32)  # upstream's silent fallback
        return np.frombuffer(done.stdout, dtype=np.int16).astype(np.float32) / INT16_SCALE

    def load(self, path: Path) -> tuple[dict[str, float], torch.Tensor, torch.Tensor | None]:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            images = [Image.open(path).convert("RGB")]
        else:
            import decord

            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            indices = sample_frame_indices(len(reader), reader.get_avg_fps(), NUM_FRAMES)
            images = [Image.fromarray(f) for f in reader.get_batch(indices).asnumpy()]
        timings["decode"] = (time.perf_counter() - start) * _MS
        start = time.perf_counter()
        pixels = self.processor.preprocess(images, return_tensors="pt")["pixel_values"]
        timings["preprocess"] = (time.perf_counter() - start) * _MS
        fbank = None
        if len(images) > 1:
            start = time.perf_counter()
            waveform = self.ffmpeg_audio(path)
            timings["audio_decode"] = (time.perf_counter() - start) * _MS
            start = time.perf_counter()
            fbank = round_to_bfloat16(kaldi_fbank(video_audio_waveform(waveform)))
            timings["fbank"] = (time.perf_counter() - start) * _MS
        return timings, pixels, fbank


def _vl2_loader(spec: MediaSpec, threads: int) -> Loader:
    def load(path: Path) -> tuple[dict[str, float], torch.Tensor, torch.Tensor | None]:
        loaded = load_media(path, spec, threads=threads)
        t = loaded.timings_ms
        stages = {"decode": t.get("decode_video", 0.0) + t.get("decode_image", 0.0),
                  "preprocess": t.get("preprocess_frames", 0.0), "audio_decode": t.get("decode_audio", 0.0),
                  "fbank": t.get("fbank", 0.0)}
        return stages, loaded.pixel_values, loaded.fbank
    return load


@dataclass
class Latency:
    """Median wall time of one loader on one file, its median stage times, and its last outputs."""

    total_ms: float
    stages_ms: dict[str, float]
    outputs: Outputs

    def stage_cell(self) -> str:
        return " / ".join(f"{self.stages_ms.get(k, 0.0):.0f}" for k in STAGES)


def _interleaved_latency(path: Path, loaders: dict[str, Loader]) -> dict[str, Latency]:
    """Each repeat runs every loader once, back to back, so machine load drifts hit them alike."""
    runs: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name in loaders}
    outputs: dict[str, Outputs] = {}
    for _ in range(REPEATS):
        for name, load in loaders.items():
            start = time.perf_counter()
            stages, pixels, fbank = load(path)
            runs[name].append(((time.perf_counter() - start) * _MS, stages))
            outputs[name] = (pixels, fbank)
    return {name: Latency(total_ms=statistics.median(r[0] for r in rs),
                          stages_ms={k: statistics.median(r[1].get(k, 0.0) for r in rs) for k in STAGES},
                          outputs=outputs[name])
            for name, rs in runs.items()}


def _assert_bit_equal(path: Path, a: Outputs, b: Outputs | LoadedMedia, what: str) -> None:
    pixels, fbank = (b.pixel_values, b.fbank) if isinstance(b, LoadedMedia) else b
    assert torch.equal(a[0], pixels), f"{path.name}: {what} pixels differ"
    assert (a[1] is None and fbank is None) or torch.equal(a[1], fbank), f"{path.name}: {what} fbank differs"


def _compare(path: Path, ours: Outputs, base: Outputs, notes: list[str]) -> str:
    pixel_error = (ours[0] - base[0]).abs().max().item()
    verdict = "equal" if pixel_error <= PIXEL_TOLERANCE else f"pixels differ {pixel_error:.3f}"
    if pixel_error > PIXEL_TOLERANCE:
        notes.append(f"{path.name}: baseline pixels differ by {pixel_error:.3f}: current Pillow runs the vertical "
                     "pass first on this aspect ratio; vl2 keeps Pillow 10.4's order and equals upstream's goldens "
                     "(tests/test_media_image.py)")
    if ours[1] is not None and base[1] is not None:
        fbank_error = ((ours[1] - base[1]).abs().max().item()) / (2 * BEATS_FBANK_STD)
        assert fbank_error <= DECODER_FBANK_TOLERANCE, f"{path.name}: fbank differs by {fbank_error}"
        verdict += f", fbank ≤{fbank_error:.3f}"
    return verdict


# ---------------------------------------------------------------- throughput

@dataclass
class Throughput:
    files_per_s: float
    startup_s: float  # pool start (processes up and imports done) plus the warm-up pass


def _pool_throughput(spec: MediaSpec, files: list[Path], reference: dict[Path, Outputs], workers: int,
                     threads_per_worker: int) -> Throughput:
    """DecodePool over the fixture list repeated, after a warm-up pass; outputs checked bit-equal."""
    start = time.perf_counter()
    with DecodePool(spec, workers=workers, threads_per_worker=threads_per_worker) as pool:
        for _ in pool.imap(files):
            pass
        warm = time.perf_counter()
        results = list(pool.imap(files * THROUGHPUT_PASSES))
        elapsed = time.perf_counter() - warm
    for path, result in results:
        assert not isinstance(result, Exception), f"{path.name}: {result}"
        _assert_bit_equal(path, reference[path], result, "DecodePool")
    return Throughput(files_per_s=len(results) / elapsed, startup_s=warm - start)


_worker_baseline: UpstreamBaseline | None = None


def _init_baseline_worker() -> None:
    global _worker_baseline
    torch.set_num_threads(1)
    _worker_baseline = UpstreamBaseline()


def _baseline_in_worker(path: Path) -> None:
    _worker_baseline.load(path)


def _baseline_throughput(files: list[Path], processes: int) -> Throughput:
    """The baseline over the repeated fixture list in `processes` processes (the cores, used upstream's way)."""
    start = time.perf_counter()
    context = mp.get_context("forkserver")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_init_baseline_worker) as pool:
        list(pool.map(_baseline_in_worker, files))
        warm = time.perf_counter()
        list(pool.map(_baseline_in_worker, files * THROUGHPUT_PASSES))
        elapsed = time.perf_counter() - warm
    return Throughput(files_per_s=len(files) * THROUGHPUT_PASSES / elapsed, startup_s=warm - start)


# ---------------------------------------------------------------- report

def _measure_each(files: list[Path], loaders: dict[str, Loader], threads: int,
                  totals: dict[str, float]) -> Iterator[tuple[Path, dict[str, Latency]]]:
    """Per file: every loader warmed once, then their interleaved median latencies (added to `totals`);
    vl2's 1-thread and n-thread outputs must be bit-equal."""
    for path in files:
        for load in loaders.values():
            load(path)  # warm the page cache and lazy imports
        latency = _interleaved_latency(path, loaders)
        for name, value in latency.items():
            totals[name] += value.total_ms
        _assert_bit_equal(path, latency["vl2_1"].outputs, latency["vl2_n"].outputs, f"{threads}-thread")
        yield path, latency


def _vl2_only(files: list[Path], spec: MediaSpec, threads: int) -> BenchResult:
    """vl2's own figures when the upstream baseline cannot run (it shells out to the ffmpeg CLI):
    the table says so instead of coming out empty."""
    loaders: dict[str, Loader] = {"vl2_1": _vl2_loader(spec, 1), "vl2_n": _vl2_loader(spec, threads)}
    rows: list[list[str]] = []
    totals = {name: 0.0 for name in loaders}
    for path, latency in _measure_each(files, loaders, threads, totals):
        one, many = latency["vl2_1"], latency["vl2_n"]
        rows.append([path.name, f"{one.total_ms:.0f}", f"{many.total_ms:.0f}", many.stage_cell()])
    rows.append(["**all, one file at a time**", f"{totals['vl2_1']:.0f}", f"{totals['vl2_n']:.0f}",
                 f"{len(files) / totals['vl2_1'] * _MS:.2f} / {len(files) / totals['vl2_n'] * _MS:.2f} files/s"])
    return BenchResult(
        title="Ingest (media fixtures → model inputs), vl2 only",
        header=["file", "vl2 1 thread (ms)", f"vl2 {threads} threads (ms)", f"vl2 {threads} threads: {' / '.join(STAGES)} ms; rate"], rows=rows,
        notes=["the upstream baseline was not run: it needs the ffmpeg CLI (its audio path shells out to "
               "`ffmpeg`), which is not installed here; install ffmpeg for the comparison",
               f"{len(files)} media fixtures, median of {REPEATS} interleaved runs per file"])


def run() -> BenchResult:
    files = _media_files()
    spec = _av_spec()
    cores = os.cpu_count() or 1
    threads = max(default_media_threads(), 2)
    if shutil.which("ffmpeg") is None:
        return _vl2_only(files, spec, threads)
    load_before = os.getloadavg()[0]
    baseline = UpstreamBaseline()
    loaders: dict[str, Loader] = {"upstream": baseline.load, "vl2_1": _vl2_loader(spec, 1),
                                  "vl2_n": _vl2_loader(spec, threads)}
    notes = [f"{len(files)} media fixtures, SigLIP-384, {NUM_FRAMES} frames, audio on (VideoLLaMA2.1-7B-AV); "
             f"{cores} CPU cores; latency: median of {REPEATS} interleaved runs per file; throughput: the fixture "
             f"list × {THROUGHPUT_PASSES} after a warm-up pass"]
    rows: list[list[str]] = []
    totals = {name: 0.0 for name in loaders}
    reference: dict[Path, Outputs] = {}
    for path, latency in _measure_each(files, loaders, threads, totals):
        base, one, many = latency["upstream"], latency["vl2_1"], latency["vl2_n"]
        reference[path] = one.outputs
        rows.append([path.name, f"{base.total_ms:.0f}", base.stage_cell(), f"{one.total_ms:.0f}",
                     f"{many.total_ms:.0f}", many.stage_cell(),
                     f"{base.total_ms / one.total_ms:.2f}× / {base.total_ms / many.total_ms:.2f}×",
                     _compare(path, one.outputs, base.outputs, notes)])
    count = len(files)
    upstream_rate = count / totals["upstream"] * _MS
    rows.append(["**all, one file at a time**", f"{totals['upstream']:.0f}", f"{upstream_rate:.2f} files/s",
                 f"{totals['vl2_1']:.0f}", f"{totals['vl2_n']:.0f}",
                 f"{count / totals['vl2_1'] * _MS:.2f} / {count / totals['vl2_n'] * _MS:.2f} files/s",
                 f"{totals['upstream'] / totals['vl2_1']:.2f}× / {totals['upstream'] / totals['vl2_n']:.2f}×", ""])
    upstream_parallel = _baseline_throughput(files, cores)
    rows.append([f"**batch: upstream in {cores} processes**", "", f"{upstream_parallel.files_per_s:.2f} files/s",
                 "", "", "", f"{upstream_parallel.files_per_s / upstream_rate:.2f}× (vs upstream, 1 process)", ""])
    for workers, per_worker in ((cores, 1), (1, threads)):
        pooled = _pool_throughput(spec, files, reference, workers, per_worker)
        rows.append([f"**batch: DecodePool {workers} worker(s) × {per_worker} thread(s)**", "", "", "", "",
                     f"{pooled.files_per_s:.2f} files/s",
                     f"{pooled.files_per_s / upstream_rate:.2f}× (vs upstream) / "
                     f"{pooled.files_per_s / upstream_parallel.files_per_s:.2f}× (vs upstream in {cores} processes)",
                     "bit-equal"])
        notes.append(f"DecodePool {workers}×{per_worker}: start-up + warm-up pass {pooled.startup_s:.1f} s "
                     "(paid once per run, excluded from files/s)")
    notes.append(f"upstream in {cores} processes: start-up + warm-up pass {upstream_parallel.startup_s:.1f} s")
    notes.append(f"machine load average (1 min) {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after "
                 f"(other jobs on the {cores} cores; 'upstream in {cores} processes' shows how much of a second "
                 "core was actually free)")
    return BenchResult(
        title="Ingest (media fixtures → model inputs)",
        header=["file", "upstream ms", "upstream decode / preprocess / audio / fbank ms", "vl2 1 thread ms",
                f"vl2 {threads} threads ms", f"vl2 {threads} threads decode / preprocess / audio / fbank ms",
                f"speed-up 1 / {threads} threads", "outputs"],
        rows=rows, notes=notes)
