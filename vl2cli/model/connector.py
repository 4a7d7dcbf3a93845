"""Video connectors: vision features (B, T, P, D) -> LLM tokens (B, M, C).

The STC connector is upstream's spatial-temporal convolution: timm RegStage blocks per frame, a Conv3d
that halves time, height and width, more RegStage blocks, then an MLP readout. `stc_connector` pads the
Conv3d by one in every dimension; `stc_connector_v35` (VideoLLaMA 2.1) does not. The simpler types exist
so every projector a config can name loads; `linear`/`mlpNx_gelu` mean-pool frames over time first.
"""
from __future__ import annotations

import math

import torch
from timm.layers import LayerNorm2d
from timm.models.regnet import RegStage
from torch import nn

from ..errors import UnsupportedModelError
from .config import MLP_GELU_PATTERN

#: Upstream STCConnector defaults.
STC_DOWNSAMPLE = (2, 2, 2)
STC_DEPTH = 4
STC_MLP_DEPTH = 2
#: Connector types that take the 4-D (B, T, P, D) features rather than time-pooled (B, P, D) ones.
SPATIO_TEMPORAL_TYPES = ("stc_connector", "stc_connector_v35", "stp_connector", "spatial_conv", "spatial_pool")


def build_mlp(depth: int, in_features: int, out_features: int) -> nn.Sequential:
    """Linear, then (GELU, Linear) * (depth - 1): upstream's `build_mlp`, state keys 0, 2, 4, ..."""
    layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
    for _ in range(1, depth):
        layers += [nn.GELU(), nn.Linear(out_features, out_features)]
    return nn.Sequential(*layers)


def build_projector(projector_type: str, in_features: int, out_features: int) -> nn.Module:
    """Token-wise projectors shared by the video (`linear`, `mlpNx_gelu`) and audio branches."""
    if projector_type == "linear":
        return nn.Linear(in_features, out_features)
    if projector_type == "identity":
        return nn.Identity()
    match = MLP_GELU_PATTERN.match(projector_type)
    if match:
        return build_mlp(int(match.group(1)), in_features, out_features)
    raise UnsupportedModelError(f"projector type {projector_type!r} is not supported.")


def _regstage(depth: int, in_chs: int, out_chs: int) -> nn.Module:
    if depth == 0:
        return nn.Identity()
    return RegStage(depth=depth, in_chs=in_chs, out_chs=out_chs, stride=1, dilation=1, act_layer=nn.SiLU, norm_layer=LayerNorm2d)


class STCConnector(nn.Module):
    """RegStage -> Conv3d (or AvgPool3d) downsampling -> RegStage -> MLP readout."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        downsample: tuple[int, int, int] = STC_DOWNSAMPLE,
        depth: int = STC_DEPTH,
        mlp_depth: int = STC_MLP_DEPTH,
        padding: int = 1,
        pooling: bool = False,
    ) -> None:
        super().__init__()
        self.s1 = _regstage(depth, in_features, out_features)
        if pooling:
            sampler: nn.Module = nn.AvgPool3d(downsample)
        else:
            sampler = nn.Conv3d(out_features, out_features, kernel_size=downsample, stride=downsample, padding=padding, bias=True)
        self.sampler = nn.Sequential(sampler, nn.SiLU())
        self.s2 = _regstage(depth, out_features, out_features)
        self.readout = build_mlp(mlp_depth, out_features, out_features)
        #: Run the convolutions on channels-last tensors (see `set_channels_last`).
        self.channels_last = False

    def set_channels_last(self, enabled: bool) -> None:
        """Keep activations and convolution weights channels-last (a GPU speed setting; same maths).

        The (B, T, H*W, D) features already are channels-last once viewed as images, so timm's
        LayerNorm2d permutes for free and cuDNN runs the 1x1 convolutions as matrix products; this
        pins that layout through the Conv3d and stores the weights alike, so cuDNN does not convert
        them on every call.
        """
        self.channels_last = enabled
        formats = {4: torch.channels_last, 5: torch.channels_last_3d}
        with torch.no_grad():
            for parameter in self.parameters():
                memory_format = formats.get(parameter.dim()) if enabled else torch.contiguous_format
                if memory_format is not None:
                    parameter.data = parameter.data.contiguous(memory_format=memory_format)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last:
            return x
        return x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 5:  # (B, T, H, W, D)
            features = features.flatten(2, 3)
        batch, frames, patches, width = features.shape
        side = int(math.isqrt(patches))
        # (B, T, H*W, D) -> (B*T, D, H, W): per-frame 2-D stage
        x = features.reshape(batch * frames, side, side, width).permute(0, 3, 1, 2)
        x = self.s1(self._layout(x))
        # -> (B, D, T, H, W) for the 3-D sampler
        x = x.reshape(batch, frames, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        x = self.sampler(self._layout(x))
        new_frames = x.shape[2]
        x = x.permute(0, 2, 1, 3, 4).flatten(0, 1)
        x = self.s2(self._layout(x))
        # (B*T', C, H', W') -> (B, T'*H'*W', C): time-major, then rows, then columns
        x = x.reshape(batch, new_frames, *x.shape[1:]).permute(0, 1, 3, 4, 2).flatten(1, 3)
        return self.readout(x)


def takes_frames(projector_type: str) -> bool:
    """True when the connector sees (B, T, P, D); otherwise frames are mean-pooled to (B, P, D) first."""
    return projector_type in SPATIO_TEMPORAL_TYPES


def build_video_connector(projector_type: str, in_features: int, out_features: int) -> nn.Module:
    """The `mm_projector` module for a config's `mm_projector_type`."""
    if projector_type == "stc_connector":
        return STCConnector(in_features, out_features, padding=1)
    if projector_type == "stc_connector_v35":
        return STCConnector(in_features, out_features, padding=0)
    if projector_type == "stp_connector":
        return STCConnector(in_features, out_features, pooling=True)
    if projector_type == "spatial_conv":
        return STCConnector(in_features, out_features, downsample=(1, 2, 2), depth=0, padding=1)
    if projector_type == "spatial_pool":
        return STCConnector(in_features, out_features, downsample=(1, 2, 2), depth=0, pooling=True)
    # token-wise types keep upstream's state-dict names (e.g. `mm_projector.0.weight`), so the module is
    # the plain projector; the caller mean-pools frames first (see `takes_frames`).
    return build_projector(projector_type, in_features, out_features)
