"""Component names shared by the exporter, the manifests and the runtime backends (import-light)."""
from __future__ import annotations

VISION_TOWER = "vision_tower"
CONNECTOR = "connector"
AUDIO_ENCODER = "audio_encoder"
ALL_COMPONENTS = (VISION_TOWER, CONNECTOR, AUDIO_ENCODER)
