"""The exportable components of a loaded model: names, I/O, weights, export-ready copies, inputs.

Each component is exported as one graph that does exactly what the matching `EncoderBackend`
method does, so a backend can swap it in without glue:
* `vision_tower`: pixels (N, 3, S, S) -> (N, P, D), already cut at the selected layer, CLS handled;
* `connector`: (B, T, P, D) -> (B, M, C), including the time mean-pool of token-wise projectors;
* `audio_encoder`: raw fbank (B, 2998, 128) -> (B, 1496, C): BEATs with its weight-norm folded,
  its relative-position bias precomputed for the fixed 30 s input and upstream's eager attention
  arithmetic, then the audio projector.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..constants import (
    AUDIO_SAMPLE_RATE,
    AUDIO_WINDOW_SAMPLES,
    BEATS_FBANK_MEAN,
    BEATS_FBANK_STD,
    FBANK_FRAME_LENGTH_MS,
    FBANK_FRAME_SHIFT_MS,
    FBANK_NUM_MEL_BINS,
)
from ..model.connector import STCConnector
from ..model.videollama2 import AUDIO_PROJECTOR_PREFIX, AUDIO_TOWER_PREFIX, CONNECTOR_PREFIX, VideoLlama2
from ..model.vision_tower import TOWER_WEIGHT_PREFIX
from .names import ALL_COMPONENTS, AUDIO_ENCODER, CONNECTOR, VISION_TOWER  # noqa: F401 (re-exported)

BATCH_AXIS = "batch"
_MS_PER_SECOND = 1000


def fbank_frames() -> int:
    """Kaldi frames of the fixed 30 s window (snip_edges): 1 + (samples - window) // shift."""
    window = AUDIO_SAMPLE_RATE * FBANK_FRAME_LENGTH_MS // _MS_PER_SECOND
    shift = AUDIO_SAMPLE_RATE * FBANK_FRAME_SHIFT_MS // _MS_PER_SECOND
    return 1 + (AUDIO_WINDOW_SAMPLES - window) // shift


@dataclass(frozen=True)
class ComponentSpec:
    """Static facts about one component's graph; the batch axis (0) is always dynamic."""

    name: str
    input_name: str
    output_name: str
    weight_prefixes: tuple[str, ...]
    item_shape: tuple[int, ...]
    #: Further dynamic axes, ONNX style {axis: name}, for the input and the output.
    input_dynamic: dict[int, str] = field(default_factory=dict)
    output_dynamic: dict[int, str] = field(default_factory=dict)

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {
            self.input_name: {0: BATCH_AXIS, **self.input_dynamic},
            self.output_name: {0: BATCH_AXIS, **self.output_dynamic},
        }

    def input_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.item_shape)

    def symbolic_input_shape(self) -> list[int | str]:
        shape: list[int | str] = [BATCH_AXIS, *self.item_shape]
        for axis, name in self.input_dynamic.items():
            shape[axis] = name
        return shape


def component_specs(model: VideoLlama2) -> dict[str, ComponentSpec]:
    """The components this checkpoint has, in export order."""
    encoders = model.torch_encoders
    specs: dict[str, ComponentSpec] = {}
    if encoders.vision_tower is not None:
        tower = encoders.vision_tower
        side = tower.image_size
        specs[VISION_TOWER] = ComponentSpec(VISION_TOWER, "pixel_values", "features", (TOWER_WEIGHT_PREFIX,), (3, side, side))
        # Without a tower output there is no connector input; a frame count other than the
        # model's stays possible (the frame axis is dynamic too).
        specs[CONNECTOR] = ComponentSpec(
            CONNECTOR, "features", "tokens", (CONNECTOR_PREFIX,),
            (model.num_frames, _tower_tokens(tower), tower.hidden_size),
            input_dynamic={1: "frames"}, output_dynamic={1: "tokens"},
        )
    if encoders.audio_tower is not None:
        specs[AUDIO_ENCODER] = ComponentSpec(
            AUDIO_ENCODER, "fbank", "tokens", (AUDIO_TOWER_PREFIX, AUDIO_PROJECTOR_PREFIX), (fbank_frames(), FBANK_NUM_MEL_BINS)
        )
    return specs


def _tower_tokens(tower: nn.Module) -> int:
    """Tokens per frame the tower returns (patches, plus CLS when CLIP keeps it)."""
    keeps_cls = tower.family == "clip" and tower.select_feature != "patch"
    return tower.num_patches + int(keeps_cls)


class ConnectorForExport(nn.Module):
    """The connector exactly as `TorchEncoders.connect` runs it (time mean-pool when it needs one)."""

    def __init__(self, connector: nn.Module, pool_frames: bool) -> None:
        super().__init__()
        self.connector = connector
        self.pool_frames = pool_frames

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.pool_frames:
            features = features.mean(dim=1)
        return self.connector(features)


class AudioEncoderForExport(nn.Module):
    """BEATs then the audio projector: one graph, fbank in, LLM tokens out."""

    def __init__(self, audio_tower: nn.Module, audio_projector: nn.Module) -> None:
        super().__init__()
        self.audio_tower = audio_tower
        self.audio_projector = audio_projector

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.audio_projector(self.audio_tower(fbank))


def export_module(model: VideoLlama2, name: str, device: torch.device | str = "cpu") -> nn.Module:
    """An fp32, eval-mode copy of one component, prepared for tracing; the loaded model is untouched.

    A copy because BEATs is folded/precomputed in place and the loaded model may be bf16 on a GPU.
    """
    encoders = model.torch_encoders
    if name == VISION_TOWER:
        module: nn.Module = copy.deepcopy(encoders.vision_tower)
    elif name == CONNECTOR:
        connector = copy.deepcopy(encoders.connector)
        if isinstance(connector, STCConnector):
            # channels-last is a GPU speed setting of the torch backend; the exporter cannot record it
            connector.set_channels_last(False)
        module = ConnectorForExport(connector, encoders.pool_frames)
    elif name == AUDIO_ENCODER:
        tower = copy.deepcopy(encoders.audio_tower)
        module = AudioEncoderForExport(tower, copy.deepcopy(encoders.audio_projector))
    else:
        raise KeyError(name)
    module = module.to(device=device, dtype=torch.float32).eval()
    if name == AUDIO_ENCODER:
        tower = module.audio_tower
        # upstream's own attention arithmetic (its fp16 overflow guard included) goes into the graph,
        # rather than the fused-kernel call the torch backend makes, which the exporter would decompose
        tower.set_attn_implementation("eager")
        tower.fold_weight_norm()
        tower.precompute_position_bias(tower.num_tokens(fbank_frames(), FBANK_NUM_MEL_BINS, tower.config.input_patch_size))
    return module


def validation_inputs(
    model: VideoLlama2, spec: ComponentSpec, batch_sizes: tuple[int, ...], *, seed: int, device: torch.device | str = "cpu"
) -> list[torch.Tensor]:
    """Fixed, realistic fp32 inputs for the parity gate, one tensor per batch size.

    Pixels are uniform in [-1, 1] (normalised images); connector inputs are the vision tower's own
    features of such pixels; fbanks are drawn so that BEATs' normalisation maps them to N(0, 1).
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for batch in batch_sizes:
        if spec.name == VISION_TOWER:
            x = torch.rand(spec.input_shape(batch), generator=generator) * 2 - 1
        elif spec.name == CONNECTOR:
            frames, _, _ = spec.item_shape
            side = model.torch_encoders.vision_tower.image_size
            pixels = torch.rand((batch * frames, 3, side, side), generator=generator) * 2 - 1
            tower = model.torch_encoders.vision_tower
            with torch.inference_mode():
                features = tower(pixels.to(model.device, next(tower.parameters()).dtype)).float().cpu()
            x = features.reshape(batch, frames, *features.shape[1:])
        else:
            normal = torch.randn(spec.input_shape(batch), generator=generator)
            x = BEATS_FBANK_MEAN + 2 * BEATS_FBANK_STD * normal
        inputs.append(x.to(device))
    return inputs
