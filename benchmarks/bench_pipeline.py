"""Does decoding overlap the model? Files/s for decode alone, model alone and both together (CPU).

The model is the tiny `siglip-qwen2-av` reference checkpoint slowed by a fixed sleep per batch, set
in the same run to what decoding one batch costs, so decode and model are balanced: a lock-step loop
then takes their sum, a pipeline that decodes ahead about max(decode, model) plus one batch. The
overlap ratio is (decode + model - together) / min(decode, model): 0 = lock-step, 1 = perfect.
Files: copies of the media fixtures' videos (`VL2_MEDIA_FIXTURES`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.run import BenchResult

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = "siglip-qwen2-av"
FILES = 24
BATCH = 4
MAX_NEW_TOKENS = 1
#: The model process's core (the decoders get the others), as the run's CPU budget intends.
MODEL_THREADS = 1


class SlowModel:
    """The real model plus a fixed cost per batch (a stand-in for a big model on a GPU); the tests use it too."""

    def __init__(self, model: Any, seconds_per_batch: float) -> None:
        self._model, self.seconds_per_batch = model, seconds_per_batch
        self.batches: list[int] = []  # the size of each batch it was given

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, inputs, instructions, **kwargs):
        self.batches.append(len(inputs))
        time.sleep(self.seconds_per_batch)
        return self._model.generate(inputs, instructions, **kwargs)


def _paths() -> tuple[Path, Path]:
    from tests.fixture_pack import media_root, reference_root

    return reference_root() / FIXTURE, media_root()


def _sources(media: Path) -> list[Path]:
    """The media fixtures' decodable videos (not the broken_* ones)."""
    return sorted(p for p in media.glob("*.mp4") if not p.name.startswith("broken_"))


def _files(media: Path, folder: Path) -> list[Path]:
    sources = _sources(media)
    return [Path(shutil.copy(sources[i % len(sources)], folder / f"{i:03d}_{sources[i % len(sources)].name}"))
            for i in range(FILES)]


def run() -> BenchResult:
    from vl2cli import api
    from vl2cli.media.workers import DecodePool
    from vl2cli.settings import default_workers
    from vl2cli.tasks.pipeline import PipelineRunner, run_task
    from vl2cli.tasks.plan import build_request
    from vl2cli.tasks.spec import RunOptions, TaskSpec

    import torch

    fixture, media = _paths()
    title = "Pipeline: decode, model and both together (CPU, tiny model slowed per batch)"
    header = ["stage", "seconds", "files/s"]
    if not fixture.is_dir() or not _sources(media):
        return BenchResult(title, header, [], [f"skipped: needs reference/{FIXTURE} and media *.mp4 fixtures"])
    os.environ["HF_HUB_CACHE"], os.environ["HF_HUB_OFFLINE"] = str(fixture / "hub"), "1"
    torch.set_num_threads(MODEL_THREADS)
    model = api.load_model(str(fixture / "checkpoint"), encoder_backend="torch")
    task = TaskSpec("caption", max_new_tokens=MAX_NEW_TOKENS)
    workers = default_workers("cpu")
    options = RunOptions(batch_size=BATCH, workers=workers)
    runner = PipelineRunner(model, task, options, build_request(model, task, options))
    with tempfile.TemporaryDirectory() as scratch:
        files = _files(media, Path(scratch))
        with DecodePool(runner.media_spec(), workers=workers, max_pending=2 * BATCH) as pool:
            list(pool.imap(files[:workers]))  # start-up (forkserver, imports) outside the timings
            started = time.perf_counter()
            decoded = [result for _, result in pool.imap(files)]
            decode_s = time.perf_counter() - started
        batches = len(files) // BATCH
        slow = SlowModel(model, seconds_per_batch=decode_s / batches)
        started = time.perf_counter()
        for start in range(0, len(files), BATCH):
            items = [_item_for(runner, loaded) for loaded in decoded[start:start + BATCH]]
            slow.generate([runner.model_input(i) for i in items], [i.instruction for i in items],
                          max_new_tokens=MAX_NEW_TOKENS)
        model_s = time.perf_counter() - started
        started = time.perf_counter()
        records = [o.record for o in run_task(slow, files, task, options)]
        together_s = time.perf_counter() - started
    assert all(r["error"] is None for r in records), [r["error"] for r in records if r["error"]]
    overlap = (decode_s + model_s - together_s) / min(decode_s, model_s)
    rows = [[name, f"{seconds:.2f}", f"{len(files) / seconds:.2f}"]
            for name, seconds in (("decode alone", decode_s), ("model alone", model_s), ("both (vl2 pipeline)", together_s))]
    rows.append(["overlap ratio", f"{overlap:.2f}", ""])
    return BenchResult(title, header, rows, [
        f"{len(files)} copies of the media fixtures' videos, batch {BATCH}, {workers} decode worker(s), "
        f"{MAX_NEW_TOKENS} new token(s), model on {MODEL_THREADS} thread(s); the model sleeps {decode_s / batches:.2f} s per batch (decode's cost per batch)",
        "overlap ratio = (decode + model - both) / min(decode, model): 0 lock-step, 1 perfect; the pipeline's own "
        "start-up (worker pool) counts in 'both'",
    ])


def _item_for(runner: Any, loaded: Any) -> Any:
    """A decoded file prepared as the pipeline prepares it (modality, instruction)."""
    from vl2cli.tasks.pipeline import WorkItem

    item = WorkItem(Path("."), None)
    runner.prepare(item, loaded)
    return item
