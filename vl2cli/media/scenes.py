"""Scene cuts of a video, found with PySceneDetect's content and histogram detectors (a kept library).

Two detectors, their cuts merged by PySceneDetect's SceneManager: ContentDetector (HSV + luma change)
misses hard cuts between colours of equal brightness and saturation (pure red -> green -> blue scores
20 of its 27), and HistogramDetector (luma histogram correlation) catches those and cuts between two
greys, which AdaptiveDetector misses too. Tuned on `tests/test_scenes.py`'s synthetic cuts.

Read through PyAV (PySceneDetect's `pyav` backend), the decoder vl2 already depends on, frames
downscaled by PySceneDetect's own rule for speed. Cut times are frame numbers over the stream's frame
rate, so a cut made at frame c is reported at c/fps.
"""
from __future__ import annotations

from dataclasses import dataclass

from vl2cli.errors import CorruptMediaError

#: PySceneDetect's default threshold for ContentDetector (HSV + luma change between frames, 0-255).
DEFAULT_SCENE_THRESHOLD = 27.0
#: PySceneDetect's default for HistogramDetector: a cut where consecutive frames' luma histograms
#: correlate less than 1 - this.
DEFAULT_HISTOGRAM_THRESHOLD = 0.2


@dataclass(frozen=True)
class SceneCuts:
    """Where new scenes start (seconds), and the video's length as the detector read it."""

    cuts_s: list[float]
    duration_s: float
    fps: float


def detect_scene_cuts(path: str, *, threshold: float = DEFAULT_SCENE_THRESHOLD,
                      histogram_threshold: float | None = DEFAULT_HISTOGRAM_THRESHOLD) -> SceneCuts:
    """Decode the whole video once and return the times where its content changes abruptly.

    Raises CorruptMediaError when the video cannot be read.
    `histogram_threshold` None: the content detector alone (what vl2 used before issue 20).
    """
    from scenedetect import (  # imported lazily: pulls in OpenCV
        ContentDetector,
        HistogramDetector,
        SceneManager,
        open_video,
    )

    try:
        video = open_video(path, backend="pyav")
        manager = SceneManager()
        manager.auto_downscale = True
        # min_scene_len 1: every cut is reported; vl2's min/max lengths are applied afterwards
        manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=1))
        if histogram_threshold is not None:
            manager.add_detector(HistogramDetector(threshold=histogram_threshold, min_scene_len=1))
        manager.detect_scenes(video=video)
        fps = float(video.frame_rate)
        cut_frames = [start.frame_num for start, _ in manager.get_scene_list(start_in_scene=True)[1:]]
        frames_read = int(video.frame_number)
    except Exception as exc:  # noqa: BLE001 - PySceneDetect/PyAV raise assorted errors for unreadable video
        raise CorruptMediaError(f"{path}: scene detection could not read the video ({type(exc).__name__}: {exc})",
                                path=path) from exc
    if fps <= 0:
        raise CorruptMediaError(f"{path}: the video has no frame rate to time its scenes", path=path)
    return SceneCuts(cuts_s=[frame / fps for frame in cut_frames], duration_s=frames_read / fps, fps=fps)
