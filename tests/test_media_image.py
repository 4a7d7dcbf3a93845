"""Pixel tensors against the slow (PIL) CLIP/SigLIP processors of transformers 4.42 that made the goldens."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from media_helpers.fixtures import GOLDEN, PROCESSOR_CONFIGS, golden_json, goldens_of_kind, media_path, needs_goldens
from vl2cli.media.image import ImageProcessorSpec, load_image_rgb, pil_resize_horizontal_first, preprocess_frames

VIDEOS = [s for s in goldens_of_kind("video") if "decord" in golden_json(s)]
IMAGES = goldens_of_kind("image")
pytestmark = pytest.mark.skipif(not VIDEOS, reason="media fixtures not found (set VL2_MEDIA_FIXTURES)")
PIXEL_TOLERANCE = 1e-5


@pytest.mark.parametrize("processor", sorted(PROCESSOR_CONFIGS))
@pytest.mark.parametrize("stem", VIDEOS)
def test_video_pixels_match_goldens(stem: str, processor: str) -> None:
    golden = load_file(GOLDEN / f"{stem}.safetensors")
    frames = golden["frames_nf4_u8"].numpy()
    expected = golden[f"{processor}_pixel_values_nf4"]  # trimmed to frames 0 and 3 of the 4-frame set
    kept = [0, 3][: frames.shape[0]]
    out = preprocess_frames(frames[kept], ImageProcessorSpec.from_config(PROCESSOR_CONFIGS[processor]))
    assert out.dtype == torch.float32
    assert out.shape == (len(kept), *expected.shape[1:])
    assert (out - expected[: len(kept)]).abs().max().item() <= PIXEL_TOLERANCE


@pytest.mark.parametrize("processor", sorted(PROCESSOR_CONFIGS))
@pytest.mark.parametrize("stem", IMAGES)
def test_image_pixels_match_goldens(stem: str, processor: str) -> None:
    golden = load_file(GOLDEN / f"{stem}.safetensors")
    rgb = load_image_rgb(str(media_path(stem)))
    np.testing.assert_array_equal(rgb[0], golden["image_rgb_u8"].numpy())
    out = preprocess_frames(rgb, ImageProcessorSpec.from_config(PROCESSOR_CONFIGS[processor]))
    assert (out - golden[f"{processor}_pixel_values"]).abs().max().item() <= PIXEL_TOLERANCE


@needs_goldens("img_mandelbrot_300x451")
def test_pass_order_matters_on_the_portrait_image() -> None:
    """Guards the reason for the explicit pass order: Pillow's own order differs on this image."""
    from PIL import Image

    rgb = load_image_rgb(str(media_path("img_mandelbrot_300x451")))[0]
    ours = pil_resize_horizontal_first(rgb, 384, 384, Image.Resampling.BICUBIC)
    vertical_first = np.asarray(Image.fromarray(np.asarray(Image.fromarray(rgb).resize((300, 384), 3))).resize((384, 384), 3))
    assert not np.array_equal(ours, vertical_first)


def test_spec_from_hub_style_configs() -> None:
    clip = ImageProcessorSpec.from_config({"feature_extractor_type": "CLIPFeatureExtractor", "size": 336,
                                           "crop_size": 336, "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    assert (clip.family, clip.size, clip.shortest_edge) == ("clip", 336, 336)
    siglip = ImageProcessorSpec.from_config(PROCESSOR_CONFIGS["siglip384"])
    assert (siglip.size, siglip.shortest_edge, siglip.pad_color) == (384, None, (127, 127, 127))
    with pytest.raises(ValueError, match="unsupported image processor"):
        ImageProcessorSpec.from_config({"image_processor_type": "ViTImageProcessor"})


def test_image_read_failures_get_their_media_codes(tmp_path) -> None:
    """A text file named .png is unsupported media; a JPEG cut short is corrupt (not 'unexpected')."""
    from PIL import Image as PILImage

    from vl2cli.errors import CorruptMediaError, UnsupportedMediaError
    from vl2cli.media.image import load_image_rgb

    text = tmp_path / "notes.png"
    text.write_text("just some text, not pixels\n" * 20)
    with pytest.raises(UnsupportedMediaError):
        load_image_rgb(str(text))
    whole = tmp_path / "whole.jpg"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(whole, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CorruptMediaError):
        load_image_rgb(str(cut))


def test_large_images_decode_quietly_and_bombs_are_refused(tmp_path, monkeypatch) -> None:
    """PIL warns above MAX_IMAGE_PIXELS and refuses above twice that; the warning must not reach stderr
    (it did under --quiet) and the refusal is an unsupported_media error, not an unexpected one."""
    import warnings

    from PIL import Image

    from vl2cli.errors import UnsupportedMediaError

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    large, bomb = tmp_path / "large.png", tmp_path / "bomb.png"
    Image.new("RGB", (40, 30)).save(large)  # 1200 px: over the limit, under twice it
    Image.new("RGB", (50, 50)).save(bomb)  # 2500 px: over twice the limit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image_rgb(str(large)).shape == (1, 30, 40, 3)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    with pytest.raises(UnsupportedMediaError, match="too large to decode safely"):
        load_image_rgb(str(bomb))


def test_decord_prints_no_decoder_lines(tmp_path, capfd) -> None:
    """decord's bundled FFmpeg wrote every decoder complaint to stderr, ~190 lines per damaged file."""
    from media_helpers import synth
    from vl2cli.media.video import decode_with_decord

    good = synth.write_video(tmp_path / "good.mp4", frames=60, width=160, height=120)
    damaged = synth.damage_video_packet(good, tmp_path / "damaged.mp4", packet=30)
    try:
        decode_with_decord(str(damaged), lambda total, fps: list(range(0, total, 4)))
    except Exception:  # decord may give up on the file (vl2 then falls back to PyAV); only stderr matters here
        pass
    assert "h264 @" not in capfd.readouterr().err


def test_a_16_bit_grey_png_is_scaled_not_clipped_to_white(tmp_path) -> None:
    """Upstream's convert('RGB') turns every level above 255 of 65535 white (issue 20)."""
    from PIL import Image

    from vl2cli.media.image import load_image_rgb

    levels = (np.arange(64, dtype=np.uint32)[None, :].repeat(8, axis=0) * 1040).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(levels).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        assert (np.asarray(image.convert("RGB"))[:, 1:] == 255).all()  # upstream: all white but level 0
    notes: list[str] = []
    rgb = load_image_rgb(str(path), notes)[0]
    expected = ((levels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert (rgb[..., 0] == rgb[..., 2]).all() and "16-bit grey" in notes[0]


def test_exif_orientation_is_applied(tmp_path) -> None:
    from PIL import Image

    from vl2cli.media.image import load_image_rgb

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (250, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    notes: list[str] = []
    rgb = load_image_rgb(str(path), notes)[0]
    assert rgb.shape == (40, 20, 3)  # upright: portrait
    assert rgb[5, 10, 0] > 200 and rgb[35, 10, 0] < 50  # the red half is now on top
    assert "EXIF orientation 6 applied" in notes[0]
    plain = tmp_path / "plain.jpg"
    Image.fromarray(stored).save(plain, quality=95)
    notes = []
    assert load_image_rgb(str(plain), notes)[0].shape == (20, 40, 3) and notes == []
