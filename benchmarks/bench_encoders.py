"""Encoder benchmarks.

`run()` (what `make bench` calls): latency, torch vs onnxruntime (CPU), on the tiny reference
fixtures. Tiny random models, so the figures show per-call overhead and the relative cost of the
backends, not real-model throughput. `VL2_REFERENCE_FIXTURES` selects another fixture folder.

`python -m benchmarks.bench_encoders --full-size` (a GPU): the released VideoLLaMA2.1-AV encoder sizes
with random weights, the torch encoders as at 0658a2a against the fast paths; see `full_size`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.run import BenchResult

REPEATS = 5
BATCH = 2
ROOT = Path(__file__).resolve().parents[1]


def _fixtures() -> list[Path]:
    from tests.fixture_pack import reference_root

    root = reference_root()
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


# ============================================================================ full size (GPU)
#
# Random weights in the released sizes (gpu-notes: SigLIP so400m-384, STC v35 to Qwen2-7B's 3584,
# BEATs defaults + mlp2x_gelu 768 -> 3584) measure speed faithfully: no checkpoint is needed.

#: Seed of the random weights and inputs (same numbers for every variant).
SEED = 0
#: Released SigLIP so400m-384 selects hidden_states[-2].
SELECT_LAYER = -2
#: Kaldi frames x mel bins of the fixed 30 s audio window.
FBANK_FRAMES, FBANK_MELS = 2998, 128
#: Half-width of the uniform pixel values (normalised images lie in [-1, 1]).
PIXEL_RANGE = 1.0


@dataclass(frozen=True)
class Shapes:
    """Model sizes and workload of one benchmark run."""

    hidden: int = 1152
    intermediate: int = 4304
    layers: int = 27
    heads: int = 16
    image: int = 384
    patch: int = 14
    llm_hidden: int = 3584
    beats: dict = field(default_factory=dict)  # BeatsConfig overrides; empty = the released defaults
    videos: int = 64
    frames: int = 16
    clips: int = 64


FULL = Shapes()
#: Tiny sizes for a CPU check that the script itself works (tests/test_bench_encoders.py).
SMOKE = Shapes(hidden=32, intermediate=64, layers=3, heads=4, image=56, patch=14, llm_hidden=64,
               beats={"embed_dim": 16, "encoder_embed_dim": 32, "encoder_layers": 2, "encoder_attention_heads": 4,
                      "encoder_ffn_embed_dim": 64, "conv_pos": 16, "conv_pos_groups": 4},
               videos=2, frames=4, clips=2)


@dataclass(frozen=True)
class Variant:
    """One way of running the torch encoders."""

    name: str
    tower_attention: str = "sdpa"
    beats_attention: str = "sdpa"
    frames_per_call: int | None = 64  # None: what TorchEncoders derives on this device
    channels_last: bool = True
    cudnn_benchmark: bool = False
    compile: bool = False


VARIANTS = {
    v.name: v for v in (
        # 0658a2a: transformers' default (sdpa) tower, 64-frame calls, NCHW weights, BEATs step by step
        Variant("0658a2a", beats_attention="eager", channels_last=False),
        Variant("eager-attention", tower_attention="eager", beats_attention="eager", channels_last=False),
        Variant("sdpa+channels-last"),
        Variant("sdpa+cl+derived-chunk", frames_per_call=None),
        Variant("sdpa+cl+derived-chunk+cudnn-benchmark", frames_per_call=None, cudnn_benchmark=True),
        Variant("compiled+chunk-64", compile=True),
        Variant("compiled+derived-chunk", frames_per_call=None, compile=True),  # the CUDA default
    )
}
#: Chosen so a run fits well under 3 minutes on an H100 (eager attention was measured already:
#: gpu-notes, 5.2 s for the tower alone); `--variants` picks others.
DEFAULT_VARIANTS = ("0658a2a", "sdpa+channels-last", "sdpa+cl+derived-chunk",
                    "sdpa+cl+derived-chunk+cudnn-benchmark", "compiled+derived-chunk")


def _randomize(module, generator) -> None:
    """Fan-in scaled normal matrices, unit norm scales, zero biases: activations stay O(1) through
    every layer, as trained weights keep them."""
    import torch

    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if parameter.dim() >= 2:
                fan_in = parameter[0].numel()
                values = torch.randn(parameter.shape, generator=generator, device=parameter.device)
                parameter.copy_(values / math.sqrt(fan_in))
            elif name.endswith("bias"):
                parameter.zero_()
            else:
                parameter.fill_(1.0)


def build_full_size(shapes: Shapes, device, dtype):
    """(vision towers by attention, STC v35 connector, BEATs, audio projector), random, on `device`."""
    import torch
    from transformers import SiglipVisionConfig

    from vl2cli.model.beats import BeatsConfig, BeatsModel
    from vl2cli.model.connector import build_projector, build_video_connector
    from vl2cli.model.vision_tower import TowerSpec, VisionTower

    generator = torch.Generator(device=device).manual_seed(SEED)
    config = SiglipVisionConfig(hidden_size=shapes.hidden, intermediate_size=shapes.intermediate,
                                num_hidden_layers=shapes.layers, num_attention_heads=shapes.heads,
                                image_size=shapes.image, patch_size=shapes.patch)
    spec = TowerSpec("siglip", config, {}, "random weights")
    with torch.device(device):
        towers = {impl: VisionTower(spec, SELECT_LAYER, "patch", attn_implementation=impl) for impl in ("sdpa", "eager")}
        _randomize(towers["sdpa"].model, generator)
        released = {k: v.clone() for k, v in towers["sdpa"].model.state_dict().items()}
        connector = build_video_connector("stc_connector_v35", shapes.hidden, shapes.llm_hidden)
        beats_config = BeatsConfig.from_dict(shapes.beats) if shapes.beats else BeatsConfig()
        audio_tower = BeatsModel(beats_config)
        projector = build_projector("mlp2x_gelu", beats_config.encoder_embed_dim, shapes.llm_hidden)
    for tower in towers.values():
        tower.load_released_weights(released)  # the released layout: strict load, then the cut
    for module in (connector, audio_tower, projector):
        _randomize(module, generator)
    for module in (*towers.values(), connector, audio_tower, projector):
        module.to(device=device, dtype=dtype).eval()
    return towers, connector, audio_tower, projector


def _synchronize(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(call, device):
    """(output, seconds) of one call, the device drained before and after."""
    _synchronize(device)
    start = time.perf_counter()
    out = call()
    _synchronize(device)
    return out, time.perf_counter() - start


def _agreement(reference, candidate) -> dict:
    import torch

    ref, got = reference.double().flatten(), candidate.double().flatten()
    return {"max_abs": (ref - got).abs().max().item(),
            "cosine": torch.nn.functional.cosine_similarity(ref, got, dim=0).item()}


def full_size(shapes: Shapes = FULL, variants=DEFAULT_VARIANTS, *, device: str = "cuda", dtype_name: str = "bf16",
              repeats: int = 2) -> dict:
    """Time tower + STC over `videos x frames` frames and BEATs + projector over `clips` fbanks, per variant.

    Each variant: one first call (compilation, cuDNN/cuBLAS set-up), then the median of `repeats`.
    Outputs are compared with the first variant's (cosine, max |Δ|).
    """
    import torch
    import transformers

    from vl2cli.model.encoders import TorchEncoders

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    started = time.perf_counter()
    towers, connector, audio_tower, projector = build_full_size(shapes, device, dtype)
    build_s = time.perf_counter() - started
    generator = torch.Generator(device=device).manual_seed(SEED)
    frames = shapes.videos * shapes.frames
    pixels = ((torch.rand((frames, 3, shapes.image, shapes.image), generator=generator, device=device) * 2 - 1)
              * PIXEL_RANGE).to(dtype)
    fbank = torch.randn((shapes.clips, FBANK_FRAMES, FBANK_MELS), generator=generator, device=device).to(dtype)
    report = {"device": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu",
              "torch": torch.__version__, "transformers": transformers.__version__, "dtype": dtype_name,
              "shapes": asdict(shapes), "frames": frames, "repeats": repeats, "build_s": round(build_s, 2),
              "vision": [], "audio": []}
    references = {}
    for name in variants:
        variant = VARIANTS[name]
        audio_tower.set_attn_implementation(variant.beats_attention)
        encoders = TorchEncoders(towers[variant.tower_attention], connector, audio_tower, projector, pool_frames=False,
                                 compile_encoders=variant.compile, frames_per_tower_call=variant.frames_per_call,
                                 cudnn_benchmark=variant.cudnn_benchmark)
        connector.set_channels_last(variant.channels_last)  # TorchEncoders sets it on CUDA; the variant decides

        def tower_and_stc():
            features, tower_s = _timed(lambda: encoders.encode_frames(pixels), device)
            tokens, stc_s = _timed(
                lambda: encoders.connect(features.reshape(shapes.videos, shapes.frames, *features.shape[1:])), device)
            return tokens, tower_s, stc_s

        tokens, tower_first, stc_first = tower_and_stc()
        runs = sorted((tower_and_stc()[1:] for _ in range(repeats)), key=sum)
        tower_s, stc_s = runs[len(runs) // 2]
        references.setdefault("vision", tokens)
        row = {"variant": name, **asdict(variant), "frames_per_call_used": encoders.frames_per_tower_call,
               "tower_s": tower_s, "stc_s": stc_s, "total_s": tower_s + stc_s, "first_call_s": tower_first + stc_first,
               **_agreement(references["vision"], tokens)}
        report["vision"].append(row)
        print(f"vision {name}: {row['total_s']:.3f} s (first call {row['first_call_s']:.1f} s)", file=sys.stderr, flush=True)
        del tokens

        audio, audio_first = _timed(lambda: encoders.encode_audio(fbank), device)
        audio_runs = sorted(_timed(lambda: encoders.encode_audio(fbank), device)[1] for _ in range(repeats))
        references.setdefault("audio", audio)
        report["audio"].append({"variant": name, "beats_attention": variant.beats_attention, "compile": variant.compile,
                                "audio_s": audio_runs[len(audio_runs) // 2], "first_call_s": audio_first,
                                **_agreement(references["audio"], audio)})
        print(f"audio {name}: {report['audio'][-1]['audio_s']:.3f} s", file=sys.stderr, flush=True)
        failed = [c for c, call in encoders.calls().items() if call.compile_failed]
        if failed:
            report.setdefault("compile_failed", {})[name] = failed
        del audio, encoders
    report["wall_s"] = round(time.perf_counter() - started, 1)
    return report


def format_full_size(report: dict) -> str:
    """Two Markdown tables (vision, audio) from a `full_size` report."""
    vision_base = report["vision"][0]["total_s"]
    audio_base = report["audio"][0]["audio_s"]
    vision = BenchResult(
        f"Tower + STC, {report['frames']} frames ({report['shapes']['videos']} x {report['shapes']['frames']}), "
        f"{report['dtype']}, {report['device']}",
        ["variant", "frames/call", "tower s", "STC s", "total s", "vs first", "first call s", "cosine", "max |Δ|"],
        [[r["variant"], str(r["frames_per_call_used"]), f"{r['tower_s']:.3f}", f"{r['stc_s']:.3f}", f"{r['total_s']:.3f}",
          f"{vision_base / r['total_s']:.2f}x", f"{r['first_call_s']:.1f}", f"{r['cosine']:.5f}", f"{r['max_abs']:.3g}"]
         for r in report["vision"]],
        [f"median of {report['repeats']} after a first call; torch {report['torch']}, transformers {report['transformers']}",
         "cosine / max |Δ| against the first variant's tokens (bf16 rounding differs between schedules)"],
    )
    audio = BenchResult(
        f"BEATs + mlp2x_gelu projector, {report['shapes']['clips']} fbanks, {report['dtype']}, {report['device']}",
        ["variant", "BEATs attention", "compiled", "s", "vs first", "first call s", "cosine", "max |Δ|"],
        [[r["variant"], r["beats_attention"], str(r["compile"]), f"{r['audio_s']:.3f}", f"{audio_base / r['audio_s']:.2f}x",
          f"{r['first_call_s']:.1f}", f"{r['cosine']:.5f}", f"{r['max_abs']:.3g}"] for r in report["audio"]],
        ["0658a2a's BEATs also built its relative-position buckets on the CPU every call; this run's eager row does not"],
    )
    from benchmarks.run import format_table

    return format_table(vision) + "\n\n" + format_table(audio)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help="released encoder sizes, random weights (a GPU)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script, times nothing useful")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if not (args.full_size or args.smoke):
        from benchmarks.run import format_table

        print(format_table(run()))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    report = full_size(SMOKE if args.smoke else FULL, variants, device=args.device, dtype_name=args.dtype,
                       repeats=args.repeats)
    print(format_full_size(report))
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
