"""`vl2 inspect FILE --out DIR`: the command's body (the decoding is `vl2cli.media.inspection`)."""
from __future__ import annotations

from pathlib import Path

from ..constants import DEFAULT_NUM_FRAMES
from ..errors import Vl2Error
from ..media.inspection import INSPECT_FILE, InspectRequest, inspect_media
from ..settings import RANGES
from ..tasks.segmenting import Segmenting


def run_inspect(file: Path, out_dir: Path, *, model: str | None = None, frames: int | None = None,
                segment: str | None = None, overlap: str | None = None, segment_min: str | None = None,
                segment_max: str | None = None, video_backend: str = "decord") -> int:
    """`vl2 inspect`'s body: the frame count from --frames, else the checkpoint's config (weights are not
    loaded), else vl2's default; the windows from --segment as a run would cut them. Prints where it wrote."""
    if frames is not None and not RANGES["frames"].holds(frames):
        raise Vl2Error(f"--frames must be {RANGES['frames'].text()} (got {frames})")
    if not Path(file).exists():
        raise Vl2Error(f"{file}: no such file")
    if video_backend not in ("decord", "pyav"):
        raise Vl2Error(f"--video-backend {video_backend!r}: choose decord or pyav")
    num_frames = frames
    if num_frames is None and model is not None:
        from ..model.identity import CheckpointIdentity  # config.json only: no torch, no weights

        from ..loading import v1_locations

        identity = CheckpointIdentity.resolve(model, **v1_locations())
        if identity.family != "videollama2":
            raise Vl2Error("vl2 inspect shows VideoLLaMA 2's decoding; Video-LLaMA (v1) checkpoints are not covered")
        num_frames = identity.num_frames
    segments = None
    if segment is not None:
        segments = Segmenting.parse(segment, overlap=overlap, min_length=segment_min, max_length=segment_max).cut(str(file))
    result = inspect_media(InspectRequest(Path(file), Path(out_dir), num_frames or DEFAULT_NUM_FRAMES,
                                          video_backend, segments))  # type: ignore[arg-type]
    shown = result["video"]["frames"] if result["video"] else [f for s in result.get("segments", []) for f in s["video"]["frames"]]
    print(f"{out_dir / INSPECT_FILE}: {len(shown)} frame(s)"
          + (f", {result['audio']['samples']} samples of sound" if result["audio"] else ", no sound"))
    return 0
