"""Media ingestion: files to model inputs, as upstream VideoLLaMA 2 preprocesses them (docs/media.md)."""
from __future__ import annotations

from vl2cli.media.image import ImageProcessorSpec, normalize_levels, preprocess_frames, value_lookup_table
from vl2cli.media.loader import LoadedMedia, MediaSpec, load_media
from vl2cli.media.probe import MediaInfo, probe_media
from vl2cli.media.workers import DecodePool

__all__ = ["DecodePool", "ImageProcessorSpec", "LoadedMedia", "MediaInfo", "MediaSpec", "load_media",
           "normalize_levels", "preprocess_frames", "probe_media", "value_lookup_table"]
