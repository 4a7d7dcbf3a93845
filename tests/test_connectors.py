"""Connector construction: released parameter counts, token counts, and upstream state-dict names."""
from __future__ import annotations

import pytest
import torch

from vl2cli.errors import UnsupportedModelError
from vl2cli.model.connector import build_projector, build_video_connector, takes_frames


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "projector_type,cin,cout,expected",
    [
        ("stc_connector", 1024, 4096, 489_188_608),  # VideoLLaMA2-7B (CLIP -> Mistral), reference-facts §1
        # VideoLLaMA2.1 (SigLIP -> Qwen2-7B). reference-facts.md §1 quotes 376,893,344, inferred from the
        # 754 MB mm_projector.bin; that is 4,096 more than this structure has, and both are "754 MB" in
        # bf16. The structure itself is upstream's: the upstream-written v35 fixture loads into it
        # strictly (every key and shape), so the count below follows from the formula.
        ("stc_connector_v35", 1152, 3584, 376_889_248),
    ],
)
def test_released_connector_parameter_counts(projector_type, cin, cout, expected):
    with torch.device("meta"):
        connector = build_video_connector(projector_type, cin, cout)
    assert _count(connector) == expected


@pytest.mark.parametrize(
    "projector_type,frames,side,tokens",
    [
        ("stc_connector", 8, 24, 845),  # CLIP-336: 24x24 patches, 8 frames -> 5 x 13 x 13
        ("stc_connector", 16, 24, 1521),
        ("stc_connector_v35", 16, 27, 1352),  # SigLIP-384: 27x27 patches, 16 frames -> 8 x 13 x 13
        ("stc_connector_v35", 8, 27, 676),
        ("stp_connector", 8, 24, 4 * 12 * 12),
        # upstream pads the kernel-1 time axis by 1 too, so spatial_conv adds two (zero) frames
        ("spatial_conv", 8, 24, 10 * 13 * 13),
        ("spatial_pool", 8, 24, 8 * 12 * 12),
    ],
)
def test_token_counts_match_upstream_arithmetic(projector_type, frames, side, tokens):
    # depth-0 types (spatial_*) have no RegStage to change width: upstream needs mm_hidden == hidden
    width_in = 16 if projector_type.startswith("spatial") else 8
    connector = build_video_connector(projector_type, width_in, 16).eval()
    with torch.inference_mode():
        out = connector(torch.randn(1, frames, side * side, width_in))
    assert out.shape == (1, tokens, 16)


def test_stc_state_dict_names_are_upstreams():
    keys = set(build_video_connector("stc_connector", 8, 16).state_dict())
    for key in ("s1.b1.downsample.conv.weight", "s1.b1.se.fc1.weight", "s2.b4.conv3.bn.bias", "sampler.0.weight", "readout.2.bias"):
        assert key in keys
    assert "s2.b1.downsample.conv.weight" not in keys  # shortcut conv only where channels change


@pytest.mark.parametrize("projector_type,keys", [("linear", {"weight", "bias"}), ("mlp2x_gelu", {"0.weight", "0.bias", "2.weight", "2.bias"})])
def test_token_wise_projectors_keep_upstream_names_and_pool_time(projector_type, keys):
    projector = build_video_connector(projector_type, 8, 16)
    assert set(projector.state_dict()) == keys
    assert not takes_frames(projector_type)
    assert takes_frames("stc_connector")


def test_unknown_projector_type_is_named():
    with pytest.raises(UnsupportedModelError, match="qformer"):
        build_projector("qformer", 4, 4)
