"""Where the media fixtures live (overridable) and small builders shared by the media tests."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from fixture_pack import media_root

REPO_ROOT = Path(__file__).resolve().parents[2]
#: `VL2_MEDIA_FIXTURES`, else the set packed in tests/fixtures/ (fixture_pack.media_root).
MEDIA_FIXTURES = media_root().resolve()
GOLDEN = MEDIA_FIXTURES / "golden"

#: The processors the goldens were made with (fixtures/media/README.md, "Image processors").
CLIP336_CONFIG = {
    "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 336},
    "crop_size": {"height": 336, "width": 336}, "resample": 3, "do_center_crop": True,
    "rescale_factor": 1 / 255, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
SIGLIP384_CONFIG = {
    "image_processor_type": "SiglipImageProcessor", "size": {"height": 384, "width": 384}, "resample": 3,
    "rescale_factor": 1 / 255, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
}
PROCESSOR_CONFIGS = {"clip336": CLIP336_CONFIG, "siglip384": SIGLIP384_CONFIG}


@lru_cache(maxsize=None)
def golden_json(stem: str) -> dict:
    return json.loads((GOLDEN / f"{stem}.json").read_text())


def goldens_of_kind(*kinds: str) -> list[str]:
    """Stems of every golden json of these kinds ("video", "image", "wav"); broken videos included."""
    if not GOLDEN.is_dir():
        return []
    return sorted(p.stem for p in GOLDEN.glob("*.json") if json.loads(p.read_text())["kind"] in kinds)


def media_path(stem: str) -> Path:
    return MEDIA_FIXTURES / golden_json(stem)["media"]


def have_media(*names: str) -> bool:
    """Whether every named file is in the media fixture folder (a test guards on exactly what it uses)."""
    return all((MEDIA_FIXTURES / name).is_file() for name in names)


def have_goldens(*stems: str) -> bool:
    """Whether every named golden (and the media file it describes) is in the fixture folder."""
    return all((GOLDEN / f"{stem}.json").is_file() and (MEDIA_FIXTURES / golden_json(stem)["media"]).is_file()
               for stem in stems)


def needs_goldens(*stems: str):
    """A skip marker for a test that uses exactly these media goldens."""
    import pytest

    return pytest.mark.skipif(not have_goldens(*stems), reason=f"media fixtures not found: {', '.join(stems)}")


def needs_media(*names: str):
    """A skip marker for a test that uses exactly these media files."""
    import pytest

    return pytest.mark.skipif(not have_media(*names), reason=f"media fixtures not found: {', '.join(names)}")


def missing_fixtures(*, reference: tuple[str, ...] = (), v1: tuple[str, ...] = (),
                     media: tuple[str, ...] = ()) -> list[str]:
    """The named reference checkpoints (VideoLLaMA 2 and v1) and media files that the fixture sets in use
    do not hold."""
    from fixture_pack import reference_root, reference_v1_root

    missing = [f"reference {name}" for name in reference if not (reference_root() / name).is_dir()]
    missing += [f"reference-v1 {name}" for name in v1 if not (reference_v1_root() / name).is_dir()]
    return missing + [f"media {name}" for name in media if not (MEDIA_FIXTURES / name).is_file()]


def needs_fixtures(*, reference: tuple[str, ...] = (), v1: tuple[str, ...] = (), media: tuple[str, ...] = ()):
    """A skip marker for a test that uses exactly these reference checkpoints and media files; its reason
    names each one missing (a set swapped in through VL2_*_FIXTURES may hold only some of them)."""
    import pytest

    missing = missing_fixtures(reference=reference, v1=v1, media=media)
    return pytest.mark.skipif(bool(missing), reason=f"fixtures not found: {', '.join(missing)}")
