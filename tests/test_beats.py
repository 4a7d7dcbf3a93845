"""BEATs audio encoder: numerical parity with upstream goldens, checkpoint layouts, export helpers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from reference_fixtures import reference_root
from safetensors.torch import load_file

from vl2cli.errors import CheckpointError, UnsupportedModelError
from vl2cli.model.beats import (
    ATTN_IMPLEMENTATIONS,
    DEFAULT_ATTN_IMPLEMENTATION,
    RELATIVE_BIAS_KEY,
    BeatsConfig,
    BeatsModel,
    load_beats_state_dict,
    relative_position_buckets,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_FIXTURES = reference_root()
AV_FIXTURE = REFERENCE_FIXTURES / "siglip-qwen2-av"
AUDIO_TOWER_PREFIX = "model.audio_tower."

PARITY_ATOL = 1e-4
EXPORT_HELPER_ATOL = 1e-5
#: fp32 sdpa vs upstream's step-by-step attention on the same weights: only rounding differs
#: (measured 2.9e-6 on the AV fixture).
SDPA_VS_EAGER_ATOL = 1e-5
#: Upstream always feeds 30 s of audio: 2998 kaldi frames x 128 mel bins -> 187 x 8 patches.
FBANK_SHAPE = (1, 2998, 128)
AUDIO_TOKENS = 1496

#: BEATs-base (the released AV audio tower) parameter count, shared relative-bias table counted once:
#: patch_embedding 512*16*16 = 131,072; layer_norm 1,024; post_extract_proj 512*768+768 = 393,984;
#: pos_conv g 128 + v 768*48*128 = 4,718,592 + bias 768; encoder.layer_norm 1,536;
#: per layer: q/k/v/out 4*(768*768+768) = 2,362,368, grep_linear 64*8+8 = 520, grep_a 12,
#:   two LayerNorms 3,072, fc1 768*3072+3072 = 2,362,368, fc2 3072*768+768 = 2,360,064 -> 7,088,404 x 12;
#: relative_attention_bias 320*12 = 3,840 (once); predictor 768*527+527 = 405,263.
BEATS_BASE_PARAMETERS = 90_717_055
#: reference-facts §1: the released bf16 audio_tower.bin (torch.save pickle) is this many bytes.
RELEASED_AUDIO_TOWER_BIN_BYTES = 181_514_532
#: What a torch.save pickle adds besides the raw tensor bytes for ~250 keys (generous upper bound).
PICKLE_OVERHEAD_BOUND_BYTES = 100_000
BF16_BYTES = 2


@pytest.fixture(scope="module")
def av_fixture() -> dict:
    if not (AV_FIXTURE / "checkpoint" / "model.safetensors").is_file():
        pytest.skip(f"no AV fixture at {AV_FIXTURE}")
    config = json.loads((AV_FIXTURE / "checkpoint" / "config.json").read_text())
    weights = load_file(str(AV_FIXTURE / "checkpoint" / "model.safetensors"))
    golden = load_file(str(AV_FIXTURE / "golden.safetensors"))
    return {
        "config": BeatsConfig.from_dict(config["audio_tower_config"]),
        "state_dict": {k[len(AUDIO_TOWER_PREFIX) :]: v for k, v in weights.items() if k.startswith(AUDIO_TOWER_PREFIX)},
        "fbank": golden["inputs.fbank"].float(),
        "expected": golden["av.audio_features"],
    }


def build_loaded(
    av_fixture: dict, state_dict: dict[str, torch.Tensor] | None = None, attn_implementation: str = DEFAULT_ATTN_IMPLEMENTATION
) -> BeatsModel:
    model = BeatsModel(av_fixture["config"], attn_implementation).eval()
    load_beats_state_dict(model, av_fixture["state_dict"] if state_dict is None else state_dict)
    return model


def run(model: BeatsModel, fbank: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(fbank)


@pytest.fixture(scope="module")
def reference_output(av_fixture: dict) -> torch.Tensor:
    return run(build_loaded(av_fixture), av_fixture["fbank"])


def test_fbank_input_is_the_upstream_shape(av_fixture: dict) -> None:
    assert tuple(av_fixture["fbank"].shape) == FBANK_SHAPE


def test_matches_upstream_audio_features(av_fixture: dict, reference_output: torch.Tensor) -> None:
    expected = av_fixture["expected"]
    assert reference_output.shape == (1, AUDIO_TOKENS, av_fixture["config"].encoder_embed_dim)
    assert reference_output.shape == expected.shape
    assert (reference_output - expected).abs().max().item() <= PARITY_ATOL


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
def test_each_attention_implementation_matches_upstream(av_fixture: dict, attn_implementation: str) -> None:
    model = build_loaded(av_fixture, attn_implementation=attn_implementation)
    assert model.attn_implementation == attn_implementation
    out = run(model, av_fixture["fbank"])
    assert (out - av_fixture["expected"]).abs().max().item() <= PARITY_ATOL


def test_sdpa_equals_the_eager_path_on_a_batch(av_fixture: dict) -> None:
    """A batch of two different clips: the gate makes the mask per clip, so batch rows must not mix."""
    generator = torch.Generator().manual_seed(0)
    fbank = av_fixture["fbank"]
    batch = torch.cat([fbank, fbank + torch.randn(fbank.shape, generator=generator)])
    model = build_loaded(av_fixture, attn_implementation="eager")
    eager = run(model, batch)
    model.set_attn_implementation("sdpa")
    sdpa = run(model, batch)
    assert (sdpa - eager).abs().max().item() <= SDPA_VS_EAGER_ATOL
    assert (eager[0] - eager[1]).abs().max().item() > SDPA_VS_EAGER_ATOL  # the rows really differ
    assert (sdpa[0:1] - run(model, batch[0:1])).abs().max().item() <= SDPA_VS_EAGER_ATOL


@pytest.mark.parametrize(
    "overrides",
    [{"gru_rel_pos": False}, {"relative_position_embedding": False}],
    ids=["ungated-bias", "no-relative-bias"],
)
def test_sdpa_equals_eager_without_the_gate_or_the_bias(overrides: dict) -> None:
    """The mask branches the released config does not take: a shared (1, H, T, T) bias, and none."""
    tiny = BeatsConfig.from_dict(
        {"embed_dim": 8, "encoder_embed_dim": 16, "encoder_layers": 2, "encoder_attention_heads": 2,
         "encoder_ffn_embed_dim": 16, "conv_pos": 4, "conv_pos_groups": 2, **overrides}
    )
    torch.manual_seed(0)
    model = BeatsModel(tiny, "eager").eval()
    fbank = torch.randn(2, 160, 32)
    eager = run(model, fbank)
    model.set_attn_implementation("sdpa")
    assert (run(model, fbank) - eager).abs().max().item() <= SDPA_VS_EAGER_ATOL


def test_unknown_attention_implementation_is_named() -> None:
    with pytest.raises(UnsupportedModelError, match="flash"):
        BeatsModel(BeatsConfig.from_dict({"encoder_layers": 1}), "flash")


def test_single_copy_bias_layout_gives_same_output(av_fixture: dict, reference_output: torch.Tensor) -> None:
    layers = av_fixture["config"].encoder_layers
    later_copies = {RELATIVE_BIAS_KEY.format(i) for i in range(1, layers)}
    single = {k: v for k, v in av_fixture["state_dict"].items() if k not in later_copies}
    assert len(single) == len(av_fixture["state_dict"]) - (layers - 1)
    assert torch.equal(run(build_loaded(av_fixture, single), av_fixture["fbank"]), reference_output)


def test_layer0_bias_copy_wins_when_copies_differ(av_fixture: dict) -> None:
    generator = torch.Generator().manual_seed(0)
    state = av_fixture["state_dict"]
    noise_shape = state[RELATIVE_BIAS_KEY.format(0)].shape

    other_changed = dict(state)
    other_changed[RELATIVE_BIAS_KEY.format(1)] = torch.randn(noise_shape, generator=generator)
    out = run(build_loaded(av_fixture, other_changed), av_fixture["fbank"])
    assert (out - av_fixture["expected"]).abs().max().item() <= PARITY_ATOL

    layer0_changed = dict(state)
    layer0_changed[RELATIVE_BIAS_KEY.format(0)] = torch.randn(noise_shape, generator=generator)
    out = run(build_loaded(av_fixture, layer0_changed), av_fixture["fbank"])
    assert (out - av_fixture["expected"]).abs().max().item() > PARITY_ATOL


def test_fold_weight_norm_keeps_output(av_fixture: dict, reference_output: torch.Tensor) -> None:
    model = build_loaded(av_fixture)
    model.fold_weight_norm()
    keys = set(model.state_dict())
    assert "encoder.pos_conv.0.weight" in keys
    assert not {"encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v"} & keys
    assert (run(model, av_fixture["fbank"]) - reference_output).abs().max().item() <= EXPORT_HELPER_ATOL


def test_precompute_position_bias_keeps_output(av_fixture: dict, reference_output: torch.Tensor) -> None:
    model = build_loaded(av_fixture)
    keys_before = set(model.state_dict())
    model.precompute_position_bias(AUDIO_TOKENS)
    assert model.encoder.cached_position_bias is not None
    assert set(model.state_dict()) == keys_before  # the cache is not a checkpoint tensor
    assert (run(model, av_fixture["fbank"]) - reference_output).abs().max().item() <= EXPORT_HELPER_ATOL


def test_cached_bias_is_refreshed_by_a_later_load(av_fixture: dict, reference_output: torch.Tensor) -> None:
    model = BeatsModel(av_fixture["config"]).eval()
    model.precompute_position_bias(AUDIO_TOKENS)  # from the random init
    load_beats_state_dict(model, av_fixture["state_dict"])
    assert (run(model, av_fixture["fbank"]) - reference_output).abs().max().item() <= EXPORT_HELPER_ATOL


def test_missing_key_raises_checkpoint_error(av_fixture: dict) -> None:
    state = dict(av_fixture["state_dict"])
    del state["encoder.layers.1.self_attn.grep_a"]
    with pytest.raises(CheckpointError, match=r"missing keys: encoder\.layers\.1\.self_attn\.grep_a"):
        load_beats_state_dict(BeatsModel(av_fixture["config"]), state)


def test_unexpected_key_raises_checkpoint_error(av_fixture: dict) -> None:
    state = dict(av_fixture["state_dict"])
    state["encoder.layers.0.self_attn.bias_k"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder\.layers\.0\.self_attn\.bias_k"):
        load_beats_state_dict(BeatsModel(av_fixture["config"]), state)


def test_wrong_shape_raises_checkpoint_error(av_fixture: dict) -> None:
    state = dict(av_fixture["state_dict"])
    state["post_extract_proj.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"post_extract_proj\.bias"):
        load_beats_state_dict(BeatsModel(av_fixture["config"]), state)


def test_model_state_dict_keys_match_checkpoint(av_fixture: dict) -> None:
    assert set(BeatsModel(av_fixture["config"]).state_dict()) == set(av_fixture["state_dict"])


def test_from_dict_reads_sizes_and_ignores_unknown_keys() -> None:
    config = BeatsConfig.from_dict({"encoder_layers": 2, "encoder_embed_dim": 32, "not_a_beats_key": 1})
    assert config.encoder_layers == 2
    assert config.encoder_embed_dim == 32
    assert config.num_buckets == BeatsConfig().num_buckets
    assert not hasattr(config, "not_a_beats_key")
    assert config.deep_norm_alpha == pytest.approx(4 ** 0.25)


def test_default_config_is_beats_base() -> None:
    config = BeatsConfig()
    assert (config.embed_dim, config.encoder_embed_dim, config.encoder_layers) == (512, 768, 12)
    assert (config.encoder_attention_heads, config.encoder_ffn_embed_dim) == (12, 3072)
    assert (config.conv_pos, config.conv_pos_groups, config.predictor_class) == (128, 16, 527)
    assert config.deep_norm_alpha == pytest.approx(24 ** 0.25)


def test_default_model_has_released_parameter_count() -> None:
    with torch.device("meta"):
        model = BeatsModel(BeatsConfig())
    count = sum(p.numel() for p in model.parameters())  # the shared bias table is counted once
    assert count == BEATS_BASE_PARAMETERS
    overhead = RELEASED_AUDIO_TOWER_BIN_BYTES - BF16_BYTES * count
    assert 0 < overhead < PICKLE_OVERHEAD_BOUND_BYTES


def test_token_count_for_a_30_second_fbank() -> None:
    assert BeatsModel.num_tokens(FBANK_SHAPE[1], FBANK_SHAPE[2], BeatsConfig().input_patch_size) == AUDIO_TOKENS
    tiny = BeatsConfig.from_dict(
        {"embed_dim": 8, "encoder_embed_dim": 16, "encoder_layers": 1, "encoder_attention_heads": 2,
         "encoder_ffn_embed_dim": 16, "conv_pos": 4, "conv_pos_groups": 2}
    )
    with torch.no_grad():
        out = BeatsModel(tiny).eval()(torch.zeros(FBANK_SHAPE))
    assert out.shape == (1, AUDIO_TOKENS, tiny.encoder_embed_dim)


def test_relative_position_buckets_follow_t5_bidirectional_layout() -> None:
    num_buckets, max_distance = 320, 800  # 160 per direction, 80 exact offsets, log-spaced to 800
    buckets = relative_position_buckets(1, 1000, num_buckets, max_distance)[0]  # offsets 0..999
    assert buckets[0].item() == 0
    assert buckets[1].item() == 161  # positive offsets live in the upper half
    assert buckets[79].item() == 160 + 79
    assert buckets[80].item() == 160 + 80
    assert buckets[800].item() == 319 and buckets[999].item() == 319
    backwards = relative_position_buckets(1000, 1, num_buckets, max_distance)[:, 0]  # offsets 0..-999
    assert backwards[1].item() == 1 and backwards[79].item() == 79 and backwards[999].item() == 159
    assert torch.all(buckets[1:].diff() >= 0)


#: bf16 keeps ~3 significant digits; the features still point the same way as the fp32 golden.
#: Measured 0.99999 on the AV fixture (torch 2.14.1, CPU); a wrong stage drags it far lower (the
#: oneDNN conv1d fault below gave 0.9915 overall, 0.15 at pos_conv itself).
BF16_MIN_COSINE = 0.999


def test_bf16_model_accepts_float32_fbank_and_stays_close(av_fixture: dict) -> None:
    model = build_loaded(av_fixture).to(torch.bfloat16)
    out = run(model, av_fixture["fbank"])
    assert out.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(out.float().flatten(), av_fixture["expected"].flatten(), dim=0)
    assert cosine.item() >= BF16_MIN_COSINE


@pytest.mark.parametrize("channels,groups,kernel", [(32, 4, 16), (768, 16, 128)], ids=["tiny-fixture", "beats-base"])
def test_bf16_pos_conv_on_cpu_stays_close_to_fp32(channels: int, groups: int, kernel: int) -> None:
    """The tiny fixtures' pos_conv shape (8 channels per group) is one oneDNN's bf16 conv1d got wrong
    (cosine 0.6 to fp32 with torch 2.14.1); the released model's shape is covered too. Random weights."""
    from vl2cli.model.beats import WeightNormConv1d

    torch.manual_seed(0)
    conv = WeightNormConv1d(channels, kernel, groups).eval()
    x = torch.randn(1, channels, 300)
    with torch.no_grad():
        expected = conv(x)
        got = conv.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(got.float().flatten(), expected.flatten(), dim=0)
    assert cosine.item() >= BF16_MIN_COSINE
