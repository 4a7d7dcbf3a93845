"""The run loop keeps the model fed: decoding overlaps model work, memory stays bounded, the hand-off is
light and exact, a batch that runs out of memory is split, and a rerun with nothing new stays light."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from media_helpers.faulty_loaders import DECODED_MARK, marking_load
from media_helpers.fixtures import SIGLIP384_CONFIG
from media_helpers.synth import write_video
from reference_fixtures import REPO_ROOT, load_reference, offline_fixture_hub, reference_root
from vl2cli import api
from vl2cli.media.image import ImageProcessorSpec, normalize_levels, preprocess_frames, value_lookup_table
from vl2cli.media.loader import LoadedMedia, MediaSpec, load_media
from vl2cli.media.workers import DecodePool
from vl2cli.settings import default_workers
from vl2cli.tasks import pipeline
from vl2cli.tasks.budget import LlmShape, batch_size_for_memory, bytes_per_item
from vl2cli.tasks.pipeline import run_task
from vl2cli.tasks.spec import RunOptions, TaskSpec

AV_FIXTURE = "siglip-qwen2-av"
needs_av_fixture = pytest.mark.skipif(not (reference_root() / AV_FIXTURE).is_dir(),
                                      reason=f"reference fixture {AV_FIXTURE} not found")
SIGLIP = ImageProcessorSpec.from_config(SIGLIP384_CONFIG)
SPEC = MediaSpec(num_frames=16, image=SIGLIP, want_audio=True)


@pytest.fixture(scope="module")
def av_model() -> Iterator[Any]:
    with offline_fixture_hub(AV_FIXTURE) as fixture:
        yield api.load_model(str(fixture.checkpoint), encoder_backend="torch")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Sixteen real (synthesised) videos with sound, each a few tenths of a second to decode."""
    folder = tmp_path_factory.mktemp("videos")
    first = write_video(folder / "clip00.mp4", frames=100, width=640, height=360, with_audio=True)
    return [first] + [Path(shutil.copy(first, folder / f"clip{i:02d}.mp4")) for i in range(1, 16)]


class OutOfMemoryAbove:
    """The real model, pretending a GPU that holds at most `limit` files per call."""

    def __init__(self, model: Any, limit: int) -> None:
        self._model, self.limit = model, limit
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, inputs, instructions, **kwargs):
        self.calls.append(len(inputs))
        if len(inputs) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return self._model.generate(inputs, instructions, **kwargs)


def _decoded(paths: list[Path]) -> int:
    """How many of these files a marking_load decoder has finished (it leaves `<path>.decoded`)."""
    return sum(Path(str(p) + DECODED_MARK).exists() for p in paths)


def _happens(condition, limit_s: float = 120.0) -> bool:
    """Wait for an event another process makes happen; the limit only keeps a broken run from hanging."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _until(condition, what: str) -> None:
    assert _happens(condition), f"never happened: {what}"


class _MarkingPool(DecodePool):
    """The run's real decode pool, whose workers leave a marker beside each file they finish."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, load_fn=marking_load, **kwargs)


class WaitsForTheNextBatch:
    """The real model, which before working on batch k waits until every file of batch k+1 is decoded:
    only a loop that decodes while the model works gets past that (a lock-step loop waits forever)."""

    def __init__(self, model: Any, batches: list[list[Path]]) -> None:
        self._model, self.planned = model, batches
        self.batches: list[int] = []
        #: per batch but the last: whether the next batch was decoded while this one waited for the model
        self.next_batch_ready: list[bool] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, inputs, instructions, **kwargs):
        index = len(self.batches)
        self.batches.append(len(inputs))
        if index + 1 < len(self.planned):
            following = self.planned[index + 1]  # (an assertion here would only become the batch's error)
            self.next_batch_ready.append(_happens(lambda: _decoded(following) == len(following)))
        return self._model.generate(inputs, instructions, **kwargs)


# ------------------------------------------------------------------ overlap
@needs_av_fixture
def test_decoding_runs_ahead_while_the_model_works(av_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Told by the order of events, not by timing: each batch's model call begins only once the next
    batch's files are decoded, which the run reaches only if its decoders go on while the model works."""
    batch = 2
    first = write_video(tmp_path / "clip00.mp4", frames=20, with_audio=True)
    files = [first] + [Path(shutil.copy(first, tmp_path / f"clip{i:02d}.mp4")) for i in range(1, 3 * batch)]
    planned = [files[i:i + batch] for i in range(0, len(files), batch)]
    model = WaitsForTheNextBatch(av_model, planned)
    monkeypatch.setattr(pipeline, "DecodePool", _MarkingPool)
    task = TaskSpec("caption", max_new_tokens=1)
    records = [o.record for o in run_task(model, files, task, RunOptions(batch_size=batch, workers=1))]
    assert model.next_batch_ready == [True] * (len(planned) - 1)
    assert [Path(r["path"]).name for r in records] == [f.name for f in files]
    assert all(r["error"] is None for r in records) and model.batches == [batch] * len(planned)
    assert _decoded(files) == len(files)


def test_decoded_ahead_files_are_bounded(tmp_path: Path) -> None:
    """While the caller holds on to a result, workers decode ahead up to max_pending files, no further.

    Counted at known points, not after a pause: once the pool has no worker busy, nothing more can be
    decoded until the caller takes a result; a pool that ignored the bound would keep its workers busy
    until every file was done."""
    source = write_video(tmp_path / "clip.mp4", frames=10)
    paths = [str(shutil.copy(source, tmp_path / f"c{i}.mp4")) for i in range(10)]
    max_pending = 4

    def decoded() -> int:
        return sum(Path(p + DECODED_MARK).exists() for p in paths)

    with DecodePool(MediaSpec(num_frames=4, image=SIGLIP, want_audio=False), workers=2, max_pending=max_pending,
                    load_fn=marking_load) as pool:
        results = pool.imap(paths)
        for taken in (1, 2):  # the caller takes a file and then "works on it" without asking for more
            next(results)
            _until(lambda: decoded() >= taken + max_pending and not pool._busy(), "the workers ran ahead, then idled")
            assert decoded() == taken + max_pending  # ran ahead without being asked, and no further than the bound
        rest = list(results)
    assert len(rest) == len(paths) - 2 and decoded() == len(paths)


def test_first_file_is_decoded_before_the_walk_ends(tmp_path: Path) -> None:
    """Paths stream into the decoders: a source that only goes on once the first result is out works."""
    clip = str(write_video(tmp_path / "clip.mp4", frames=10))
    first_out = threading.Event()

    def slow_walk() -> Iterator[str]:
        yield clip
        assert first_out.wait(timeout=60), "the pool waited for the whole walk before decoding"
        yield clip

    with DecodePool(MediaSpec(num_frames=4, image=SIGLIP, want_audio=False), workers=1) as pool:
        results = []
        for _, result in pool.imap(slow_walk()):
            first_out.set()
            results.append(result)
    assert len(results) == 2 and all(isinstance(r, LoadedMedia) for r in results)


# ------------------------------------------------------------------ hand-off
def test_uint8_handoff_gives_the_same_pixels_bit_for_bit(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", frames=40, width=320, height=180)
    normalised = load_media(clip, MediaSpec(num_frames=8, image=SIGLIP, want_audio=False))
    levels = load_media(clip, MediaSpec(num_frames=8, image=SIGLIP, want_audio=False, normalize_pixels=False))
    assert levels.pixel_values.dtype == torch.uint8
    assert levels.pixel_values.element_size() * 4 == normalised.pixel_values.element_size()
    assert torch.equal(normalize_levels(levels.pixel_values, value_lookup_table(SIGLIP)), normalised.pixel_values)
    frames = torch.randint(0, 256, (3, 50, 70, 3), dtype=torch.uint8).numpy()
    assert torch.equal(normalize_levels(preprocess_frames(frames, SIGLIP, normalize=False), value_lookup_table(SIGLIP)),
                       preprocess_frames(frames, SIGLIP))


# ------------------------------------------------------------------ out of memory
@needs_av_fixture
def test_a_batch_that_runs_out_of_memory_is_split_and_retried(av_model, videos: list[Path]) -> None:
    files = videos[:5]
    task = TaskSpec("caption", max_new_tokens=2)
    limited = OutOfMemoryAbove(av_model, limit=2)
    records = [o.record for o in run_task(limited, files, task, RunOptions(batch_size=5, workers=2))]
    single = [o.record for o in run_task(av_model, files, task, RunOptions(batch_size=1, workers=1))]
    assert all(r["error"] is None for r in records)
    assert [r["output"] for r in records] == [r["output"] for r in single]
    assert limited.calls[:3] == [5, 3, 2]  # halves until it fits...
    assert max(r["timings_ms"]["batch_size"] for r in records) <= 2
    alone = OutOfMemoryAbove(av_model, limit=0)
    failed = [o.record for o in run_task(alone, files[:1], task, RunOptions(batch_size=1, workers=1))]
    assert failed[0]["error"]["code"] == "model_error" and "out of memory" in failed[0]["error"]["message"]


# ------------------------------------------------------------------ fast start
@needs_av_fixture
def test_single_file_is_decoded_in_process(av_model, videos: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pool(*args, **kwargs):
        raise AssertionError("a worker pool was started for a single file")

    monkeypatch.setattr(pipeline, "DecodePool", no_pool)
    records = api.ask(av_model, videos[0], "what is shown?", max_new_tokens=2)
    assert len(records) == 1 and records[0]["error"] is None and records[0]["output"] is not None


@pytest.mark.slow
@needs_av_fixture
def test_a_rerun_with_everything_done_imports_no_torch(av_model, videos: list[Path], tmp_path: Path) -> None:
    fixture = load_reference(AV_FIXTURE)
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "HF_HUB_CACHE": str(fixture.hub_cache), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    argv = ["caption", str(videos[0].parent), "--include", "clip0[01].mp4", "--out", str(out),
            "--model", str(fixture.checkpoint), "--max-new-tokens", "2", "--quiet"]
    script = textwrap.dedent(f"""
        import json, sys
        from vl2cli.cli import app
        try:
            app({argv!r}, prog_name="vl2")
        except SystemExit as exit:
            code = exit.code
        heavy = [m for m in ("torch", "transformers", "av", "decord", "numpy") if m in sys.modules]
        print(json.dumps({{"code": code, "heavy": heavy}}))
    """)
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert json.loads(first.stdout.splitlines()[-1])["heavy"][:2] == ["torch", "transformers"], first.stderr
    assert len(out.read_text().splitlines()) == 2
    rerun = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert json.loads(rerun.stdout.splitlines()[-1]) == {"code": 0, "heavy": []}, rerun.stderr
    assert "2 skipped" in rerun.stderr and len(out.read_text().splitlines()) == 2


# ------------------------------------------------------------------ defaults from the machine
def test_default_workers_leave_the_model_a_core() -> None:
    assert default_workers("cuda", cores=16) == 12
    assert default_workers("cuda", cores=8) == 7
    assert default_workers("cpu", cores=2) == 1
    assert default_workers("cuda", cores=1) == 1


def test_gpu_batch_size_follows_free_memory_and_tokens() -> None:
    qwen2_7b = LlmShape(layers=28, kv_heads=4, head_dim=128, hidden=3584, intermediate=18944, dtype_bytes=2)
    av_item = bytes_per_item(qwen2_7b, prompt_tokens=2900, new_tokens=64)
    video_item = bytes_per_item(qwen2_7b, prompt_tokens=1400, new_tokens=64)
    assert video_item < av_item
    kv_only = 2 * 28 * 4 * 128 * 2 * (2900 + 64)
    assert kv_only < av_item < 4 * kv_only
    gib = 2**30
    big = batch_size_for_memory(free_bytes=60 * gib, item_bytes=video_item, cap=64)
    small = batch_size_for_memory(free_bytes=6 * gib, item_bytes=av_item, cap=64)
    assert big == 64 and 1 <= small < 16
    assert batch_size_for_memory(free_bytes=gib // 10, item_bytes=av_item, cap=64) == 1


@needs_av_fixture
def test_media_token_count_for_batch_planning_matches_a_real_encode(av_model, videos: list[Path]) -> None:
    """On a GPU the batch size is planned from this count; it must equal what a real file encodes to."""
    task, options = TaskSpec("caption"), RunOptions()
    runner = pipeline.PipelineRunner(av_model, task, options, pipeline.build_request(av_model, task, options))
    item = pipeline.WorkItem(videos[0], None)
    runner.prepare(item, load_media(videos[0], runner.media_spec()))
    assert item.modality == "av"
    block = av_model.encode([runner.model_input(item)])[0]
    assert runner.media_tokens() == block.shape[0]


@pytest.mark.slow
@needs_av_fixture
@pytest.mark.parametrize("how", ["script", "stdin"])
def test_the_library_works_from_a_script_without_a_main_guard(videos: list[Path], tmp_path: Path, how: str) -> None:
    """Decode workers must not re-run the caller's main module (README's example saved as a script)."""
    fixture = load_reference(AV_FIXTURE)
    code = textwrap.dedent(f"""
        import json
        import vl2cli
        model = vl2cli.load_model({str(fixture.checkpoint)!r}, encoder_backend="torch")
        records = vl2cli.caption(model, {[str(v) for v in videos[:3]]!r}, max_new_tokens=2, workers=2)
        print("RESULT", json.dumps([r["error"] for r in records]))
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(fixture.hub_cache), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    if how == "script":
        script = tmp_path / "caption_all.py"
        script.write_text(code)
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    else:
        run = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, env=env, timeout=600)
    results = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert results == ["RESULT " + json.dumps([None, None, None])], run.stderr[-3000:]
