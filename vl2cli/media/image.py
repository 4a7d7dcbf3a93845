"""The vision tower's image processor, reproduced uint8-exactly, each distinct frame once, on a few threads.

Why not call transformers' processor: upstream's goldens come from the slow (PIL) CLIP/SigLIP
processors of transformers 4.42. Their result is PIL's uint8 bicubic resize followed by a per-value
rescale/normalise. PIL is therefore kept for the resize (torchvision's uint8 antialiased bicubic is
±1..23 levels off PIL's), while the float maths is a lookup: the normalised value depends only on the
uint8 level and the channel, so it is a 256-entry table per channel. PIL and numpy's `take` release the
GIL, so frames are processed in parallel threads; a repeated frame (short videos) is computed once.

Pillow ≥ 11 may run the vertical pass of a two-axis resize first (it picks the cheaper order); the
goldens' Pillow 10.4 always ran the horizontal pass first, and the uint8 rounding between the passes
makes the order visible (up to 19 levels on a portrait image squashed to a square). We therefore
resize the two axes in two explicit calls, horizontal first.
"""
from __future__ import annotations

import warnings

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vl2cli.errors import CorruptMediaError, UnsupportedMediaError
from vl2cli.media.parallel import for_each_index, resolve_threads

ProcessorFamily = Literal["clip", "siglip"]
RGB_CHANNELS = 3
_UINT8_LEVELS = 256
#: `image_processor_type` / legacy `feature_extractor_type` values, by family.
_FAMILY_BY_TYPE = {
    "CLIPImageProcessor": "clip", "CLIPImageProcessorFast": "clip", "CLIPFeatureExtractor": "clip",
    "SiglipImageProcessor": "siglip", "SiglipImageProcessorFast": "siglip",
}


def _square_side(value: int | dict, key_order: tuple[str, ...]) -> int:
    if isinstance(value, int):
        return value
    for key in key_order:
        if key in value:
            return int(value[key])
    raise ValueError(f"unsupported size entry {value!r}")


@dataclass(frozen=True)
class ImageProcessorSpec:
    """What the tower's `preprocessor_config.json` asks for (only the fields that change the pixels).

    CLIP: resize the shortest edge to `shortest_edge`, centre-crop `size`×`size`.
    SigLIP: resize to `size`×`size` ignoring the aspect ratio (`shortest_edge` is None).
    """

    family: ProcessorFamily
    size: int
    shortest_edge: int | None
    resample: int
    do_resize: bool
    do_center_crop: bool
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @classmethod
    def from_config(cls, config: dict) -> "ImageProcessorSpec":
        """Build from a CLIPImageProcessor / SiglipImageProcessor config dict (as on the hub)."""
        kind = config.get("image_processor_type") or config.get("feature_extractor_type")
        family = _FAMILY_BY_TYPE.get(kind)
        if family is None:
            raise ValueError(f"unsupported image processor {kind!r}; expected one of {sorted(_FAMILY_BY_TYPE)}")
        common = dict(
            resample=int(config.get("resample", Image.Resampling.BICUBIC)),
            do_resize=bool(config.get("do_resize", True)),
            do_rescale=bool(config.get("do_rescale", True)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
            do_normalize=bool(config.get("do_normalize", True)),
            image_mean=tuple(float(v) for v in config["image_mean"]),
            image_std=tuple(float(v) for v in config["image_std"]),
        )
        if family == "clip":
            shortest = _square_side(config["size"], ("shortest_edge",))
            crop = _square_side(config.get("crop_size", shortest), ("height",))
            return cls(family="clip", size=crop, shortest_edge=shortest,
                       do_center_crop=bool(config.get("do_center_crop", True)), **common)
        side = _square_side(config["size"], ("height",))
        return cls(family="siglip", size=side, shortest_edge=None, do_center_crop=False, **common)

    @property
    def pad_color(self) -> tuple[int, int, int]:
        """Background of upstream's training-time pad-to-square (`int(mean*255)` per channel)."""
        return tuple(int(m * 255) for m in self.image_mean)


def resized_hw(height: int, width: int, spec: ImageProcessorSpec) -> tuple[int, int]:
    """Output (height, width) of the resize step, with transformers' integer rounding of the long edge."""
    if spec.shortest_edge is None:
        return spec.size, spec.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(spec.shortest_edge * long / short)
    return (new_long, spec.shortest_edge) if width <= height else (spec.shortest_edge, new_long)


def value_lookup_table(spec: ImageProcessorSpec) -> torch.Tensor:
    """(3, 256) float32: the processor's output for each uint8 level and channel.

    Same operations and dtypes as transformers' slow path: rescale in float64 then cast to float32,
    normalise in float32 with float32 mean/std.
    """
    levels = np.arange(_UINT8_LEVELS, dtype=np.float64)[None, :].repeat(RGB_CHANNELS, 0)
    values = (levels * spec.rescale_factor if spec.do_rescale else levels).astype(np.float32)
    if spec.do_normalize:
        mean = np.array(spec.image_mean, dtype=np.float32)[:, None]
        std = np.array(spec.image_std, dtype=np.float32)[:, None]
        values = (values - mean) / std
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def pil_resize_horizontal_first(frame: np.ndarray, out_w: int, out_h: int, resample: int) -> np.ndarray:
    """PIL resize of one (H,W,3) uint8 frame with Pillow 10's pass order (width first, then height)."""
    height, width = frame.shape[:2]
    image = Image.fromarray(frame)
    if out_w != width:
        image = image.resize((out_w, height), resample=resample)
    if out_h != height:
        image = image.resize((out_w, out_h), resample=resample)
    return np.asarray(image)


def _resized_hw_for(frames: np.ndarray, spec: ImageProcessorSpec) -> tuple[int, int]:
    height, width = frames.shape[1:3]
    return resized_hw(height, width, spec) if spec.do_resize else (height, width)


def _resize_and_crop(frame: np.ndarray, out_hw: tuple[int, int], spec: ImageProcessorSpec) -> np.ndarray:
    """One (H,W,3) uint8 frame through the resize and centre crop; returns (S,S,3) or the resized frame."""
    out_h, out_w = out_hw
    resized = frame if (out_h, out_w) == frame.shape[:2] else pil_resize_horizontal_first(frame, out_w, out_h,
                                                                                           spec.resample)
    if not spec.do_center_crop:
        return resized
    top, left = (out_h - spec.size) // 2, (out_w - spec.size) // 2
    return resized[top:top + spec.size, left:left + spec.size]


def resize_frames(frames: np.ndarray, spec: ImageProcessorSpec) -> np.ndarray:
    """PIL resize of each (H,W,3) uint8 frame, then the centre crop; returns (N,S,S,3) uint8."""
    out_hw = _resized_hw_for(frames, spec)
    return np.stack([_resize_and_crop(frame, out_hw, spec) for frame in frames])


def first_occurrences(frames: np.ndarray) -> list[int]:
    """For each frame, the index of the earliest equal frame among its run of equal neighbours.

    Short videos repeat sampled indices (consecutive after sorting), and equal uint8 input gives equal
    output, so each distinct frame is resized once. A one-row check rejects unequal frames cheaply.
    """
    sources = list(range(frames.shape[0]))
    middle_row = frames.shape[1] // 2
    for i in range(1, frames.shape[0]):
        previous = sources[i - 1]
        if np.array_equal(frames[i, middle_row], frames[previous, middle_row]) and np.array_equal(frames[i],
                                                                                                 frames[previous]):
            sources[i] = previous
    return sources


def preprocess_frames(frames: np.ndarray, spec: ImageProcessorSpec, *, threads: int | None = None,
                      normalize: bool = True) -> torch.Tensor:
    """(N,H,W,3) uint8 RGB -> (N,3,S,S) float32, equal to the tower's image processor output.

    Each distinct frame is resized, cropped and mapped through the value table on its own, on up to
    `threads` threads (None: the process default, see `vl2cli.media.parallel`); repeated frames are copied.
    `normalize=False` stops before the value table and returns the (N,3,S,S) uint8 levels: a quarter
    of the bytes to hand between processes and to the GPU, where `normalize_levels` finishes the job
    with the very same table (so the values are bit-identical).
    """
    if frames.ndim != 4 or frames.shape[-1] != RGB_CHANNELS or frames.dtype != np.uint8:
        raise ValueError(f"expected (N,H,W,3) uint8 frames, got {frames.shape} {frames.dtype}")
    out_hw = _resized_hw_for(frames, spec)
    side_hw = (spec.size, spec.size) if spec.do_center_crop else out_hw
    table = value_lookup_table(spec).numpy()
    out = np.empty((frames.shape[0], RGB_CHANNELS, *side_hw), dtype=np.float32 if normalize else np.uint8)
    sources = first_occurrences(frames)
    distinct = [i for i, source in enumerate(sources) if source == i]

    def process(position: int) -> None:
        index = distinct[position]
        pixels = _resize_and_crop(frames[index], out_hw, spec)
        for channel in range(RGB_CHANNELS):
            if normalize:
                np.take(table[channel], pixels[..., channel], out=out[index, channel])
            else:
                out[index, channel] = pixels[..., channel]

    for_each_index(len(distinct), process, resolve_threads(threads))
    for index, source in enumerate(sources):
        if source != index:
            out[index] = out[source]
    return torch.from_numpy(out)


def normalize_levels(levels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(N,3,S,S) uint8 levels -> float32 processor output, on the levels' device.

    `table` is `value_lookup_table(spec)` (moved to the same device once by the caller). A lookup, not
    arithmetic, so the result equals `preprocess_frames(..., normalize=True)` bit for bit on any device.
    """
    if levels.dtype != torch.uint8 or levels.ndim != 4 or levels.shape[1] != RGB_CHANNELS:
        raise ValueError(f"expected (N,3,S,S) uint8 levels, got {tuple(levels.shape)} {levels.dtype}")
    offsets = torch.arange(RGB_CHANNELS, device=levels.device, dtype=torch.long).view(1, RGB_CHANNELS, 1, 1)
    flat_index = levels.long() + offsets * _UINT8_LEVELS
    return table.reshape(-1).take(flat_index)


#: Pillow modes of 16-bit grey images (PNG, TIFF): `convert("RGB")` clips them, so all but the
#: darkest 1/256 of the range comes out white.
_GREY16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_UINT16_MAX = 65535
_UINT8_MAX = 255
#: EXIF tag 0x0112 (Orientation); 1 = as stored.
_EXIF_ORIENTATION = 0x0112


def _as_a_viewer_shows(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """The picture an image viewer shows where upstream's `convert("RGB")` shows another, and what was done.

    A 16-bit grey image is scaled to 8 bits (upstream: white); an EXIF orientation is applied
    (upstream: ignored, so a phone photo lies on its side). Every other image is left as upstream reads it.
    """
    notes: list[str] = []
    grey16 = image.mode in _GREY16_MODES or (image.mode == "I" and image.getextrema()[1] > _UINT8_MAX)
    if grey16:
        levels = np.asarray(image).astype(np.uint32)
        scaled = ((np.clip(levels, 0, _UINT16_MAX) * _UINT8_MAX + _UINT16_MAX // 2) // _UINT16_MAX).astype(np.uint8)
        image = Image.fromarray(scaled, mode="L")
        notes.append("16-bit grey image scaled to 8 bits, as a viewer shows it (upstream's PIL convert('RGB') "
                     "clips it to white; a deliberate divergence, docs/media.md)")
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if hasattr(image, "getexif") else 1
    if orientation not in (None, 1):
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
        notes.append(f"EXIF orientation {orientation} applied, as a viewer shows the photo (upstream ignores it; "
                     "a deliberate divergence, docs/media.md)")
    return image, notes


def load_image_rgb(path: str, notes: list[str] | None = None) -> np.ndarray:
    """Upstream's image read: `PIL.Image.open(p).convert('RGB')` as a (1,H,W,3) uint8 array, except where
    that shows another picture than a viewer (`_as_a_viewer_shows`; `notes` gets what was done).

    PIL's failures become the media errors they are: not an image PIL knows -> unsupported_media; an
    image whose data ends early or is damaged -> corrupt_media.
    """
    try:
        with warnings.catch_warnings():
            # Large but under PIL's hard limit: decoded like any image (stderr stays clean under --quiet).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                shown, said = _as_a_viewer_shows(image)
                if notes is not None:
                    notes.extend(said)
                return np.asarray(shown.convert("RGB"))[None]
    except UnidentifiedImageError as exc:
        raise UnsupportedMediaError(f"{path}: not an image format vl2 can read", path=path) from exc
    except Image.DecompressionBombError as exc:  # more pixels than PIL agrees to decode: a decompression bomb
        raise UnsupportedMediaError(f"{path}: the image is too large to decode safely ({exc})", path=path) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # PIL: "image file is truncated", broken chunks
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptMediaError(f"{path}: the image is damaged or truncated ({exc})", path=path) from exc
