"""BEATs audio encoder (Microsoft BEATs, as vendored by VideoLLaMA 2's `audio_visual` branch).

A clean re-implementation for inference. It turns a raw kaldi log-mel fbank (B, 2998, 128) into
(B, 1496, encoder_embed_dim) features, matching upstream `BEATs.extract_features(fbank,
padding_mask=<all False>, feature_only=True)[0]`. State-dict key names equal the released
checkpoint's (`model.audio_tower.*` without the prefix), so weights load without renaming.

Numerics that matter for parity and are reproduced on purpose:
* attention scores use a "scaled max-subtraction" trick: q is pre-divided by alpha, the row maximum
  is subtracted, then the scores are multiplied by alpha again (it keeps fp16 from overflowing);
* the GRU gate of the relative position bias reads the *unscaled* per-head query;
* deep-norm post-LN residuals, `x = LN(alpha * residual + f(x))` with alpha = (2 * layers) ** 0.25;
* `pos_conv` uses a custom weight norm over every dim but dim 2, computed in fp32 with eps 1e-6;
* the FFN GELU runs in fp32 whatever the model dtype.
Dropout and layer drop are training-only and absent here; so is the padding mask (always all False
for VideoLLaMA 2's fixed 30 s inputs, where it has no effect).

Attention implementations (`attn_implementation`): "eager" is upstream's arithmetic step by step;
"sdpa" (the default) hands the same attention to `F.scaled_dot_product_attention` with the gated
relative bias as its float mask. Softmax ignores a constant per row, so upstream's max-subtraction
(scores/alpha - rowmax, times alpha) is the plain scaled product for softmax's purposes; fused kernels
keep the scores in fp32, which is what the trick protects in fp16. Both match the goldens. ONNX
export uses "eager", so graphs (and fp16 TensorRT engines built from them) keep upstream's guard.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import BEATS_FBANK_MEAN, BEATS_FBANK_STD
from ..errors import UnsupportedModelError
from .strict_load import load_exact

#: Attention scores are computed on q / alpha and re-multiplied by alpha after the row maximum is
#: subtracted (upstream `MultiheadAttention.forward`, `alpha = 32`).
ATTENTION_SCORE_ALPHA = 32
#: The custom weight norm of `pos_conv` normalises over every dimension except this one (kernel).
POS_CONV_WEIGHT_NORM_DIM = 2
#: Added to the squared norm before the reciprocal square root (upstream `weight_norm_fix.py`).
POS_CONV_WEIGHT_NORM_EPS = 1e-6
#: The GRU gate projects each head's query to 2 gates x 4 values, summed per gate.
GRU_GATE_COUNT = 2
GRU_GATE_WIDTH = 4
#: Deep-norm residual scale: alpha = (DEEP_NORM_LAYER_FACTOR * encoder_layers) ** DEEP_NORM_EXPONENT.
DEEP_NORM_LAYER_FACTOR = 2
DEEP_NORM_EXPONENT = 1 / 4

#: Attention implementations (see the module docstring).
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
DEFAULT_ATTN_IMPLEMENTATION = "sdpa"

#: Checkpoint key of the relative bias table of layer `{}`; layer 0's is the one computation uses.
RELATIVE_BIAS_KEY = "encoder.layers.{}.self_attn.relative_attention_bias.weight"


@dataclass
class BeatsConfig:
    """BEATs hyper-parameters; field names and defaults are upstream `BEATsConfig`'s.

    Released AV checkpoints carry no BEATs config: upstream always builds the defaults (BEATs-base).
    The test fixtures override them through `audio_tower_config` in config.json.
    """

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False

    encoder_layers: int = 12
    hidden_size: int = 4096  # unused by BEATs itself (upstream keeps the LLM width here)
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"

    layer_wise_gradient_decay_ratio: float = 0.6  # training only
    layer_norm_first: bool = False
    deep_norm: bool = True

    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.05  # training only
    dropout_input: float = 0.0

    conv_pos: int = 128
    conv_pos_groups: int = 16

    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True

    finetuned_model: bool = True
    predictor_dropout: float = 0.0
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BeatsConfig:
        """Build from upstream's full config dict; keys this class does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads

    @property
    def deep_norm_alpha(self) -> float:
        """Residual scale of the post-LN layers (1 without deep norm)."""
        if not self.deep_norm:
            return 1.0
        return math.pow(DEEP_NORM_LAYER_FACTOR * self.encoder_layers, DEEP_NORM_EXPONENT)


# ----------------------------------------------------------------------------- pure helpers


def normalize_fbank(fbank: torch.Tensor) -> torch.Tensor:
    """BEATs input normalisation; upstream divides by *twice* the dataset std."""
    return (fbank - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)


def gelu_fp32(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU evaluated in fp32 and cast back, as upstream's FFN does for fp16/bf16 models."""
    return F.gelu(x.float()).type_as(x)


def relative_position_buckets(
    query_length: int,
    key_length: int,
    num_buckets: int,
    max_distance: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """T5-style bidirectional buckets of `key_pos - query_pos`, shape (query_length, key_length).

    Half the buckets are for positive offsets; within each half, offsets below a quarter of
    `num_buckets` get their own bucket and larger ones share log-spaced buckets up to `max_distance`.
    Built on `device` (the bias table's), so a GPU model does not compute T x T logs on the CPU and
    copy them over on every call.
    """
    query_positions = torch.arange(query_length, dtype=torch.long, device=device)[:, None]
    relative = torch.arange(key_length, dtype=torch.long, device=device)[None, :] - query_positions
    half = num_buckets // 2
    buckets = (relative > 0).to(torch.long) * half
    distance = relative.abs()
    max_exact = half // 2
    is_small = distance < max_exact
    # Clamping only touches entries that take the `is_small` branch; it keeps log() finite there.
    far = distance.clamp(min=max_exact)
    far_bucket = max_exact + (
        torch.log(far.float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).to(torch.long)
    far_bucket = torch.minimum(far_bucket, torch.full_like(far_bucket, half - 1))
    return buckets + torch.where(is_small, distance, far_bucket)


def check_attn_implementation(attn_implementation: str) -> str:
    """The name itself when it is one BEATs knows; UnsupportedModelError otherwise."""
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise UnsupportedModelError(
            f"BEATs attention {attn_implementation!r}: choose one of {', '.join(ATTN_IMPLEMENTATIONS)}."
        )
    return attn_implementation


def weight_norm_weight(weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
    """Upstream's weight-norm fix: g * v / sqrt(sum(v^2) + eps) over all dims but dim 2, in fp32."""
    v = weight_v.float()
    reduce_dims = [d for d in range(v.dim()) if d != POS_CONV_WEIGHT_NORM_DIM]
    squared_norm = v.pow(2).sum(reduce_dims, keepdim=True)
    direction = v * torch.rsqrt(squared_norm + POS_CONV_WEIGHT_NORM_EPS)
    return weight_g * direction.to(weight_v.dtype)


# ----------------------------------------------------------------------------- modules


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d whose weight is stored as (weight_g, weight_v), the checkpoint's layout.

    Plain parameters instead of torch's weight-norm parametrisation keep the key names
    `weight_g` / `weight_v`; `fold()` turns them into one `weight` for export.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = groups
        v = torch.empty(channels, channels // groups, kernel_size)
        nn.init.normal_(v, std=math.sqrt(4 / (kernel_size * channels)))
        reduce_dims = [d for d in range(v.dim()) if d != POS_CONV_WEIGHT_NORM_DIM]
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.pow(2).sum(reduce_dims, keepdim=True).sqrt())
        self.bias = nn.Parameter(torch.zeros(channels))

    @property
    def is_folded(self) -> bool:
        return "weight" in self._parameters

    def current_weight(self) -> torch.Tensor:
        if self.is_folded:
            return self.weight
        return weight_norm_weight(self.weight_g, self.weight_v)

    def fold(self) -> None:
        """Replace weight_g / weight_v by the plain weight they produce (same outputs)."""
        if self.is_folded:
            return
        with torch.no_grad():
            weight = self.current_weight().detach().clone()
        del self.weight_g
        del self.weight_v
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.current_weight(), self.bias
        if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
            # oneDNN's CPU bf16 conv1d returns wrong values for narrow groups with long kernels (torch
            # 2.14.1: under 16 channels per group with kernel 16 or 128, cosine to fp32 below 0.2; the
            # tiny fixtures' pos_conv has 8). One convolution in fp32 is a few % of the encoder's work.
            return F.conv1d(x.float(), weight.float(), bias.float(), padding=self.kernel_size // 2,
                            groups=self.groups).to(x.dtype)
        return F.conv1d(x, weight, bias, padding=self.kernel_size // 2, groups=self.groups)


class SamePad(nn.Module):
    """Drop the extra trailing step a centred even-kernel convolution produces."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : x.shape[-1] - self.remove] if self.remove else x


class BeatsAttention(nn.Module):
    """Self-attention with scaled max-subtraction and a GRU-gated relative position bias."""

    def __init__(
        self,
        config: BeatsConfig,
        has_relative_attention_bias: bool,
        attn_implementation: str = DEFAULT_ATTN_IMPLEMENTATION,
    ) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.attn_implementation = check_attn_implementation(attn_implementation)
        self.num_heads = config.encoder_attention_heads
        self.head_dim = config.head_dim
        if self.head_dim * self.num_heads != dim:
            raise UnsupportedModelError(
                f"BEATs encoder_embed_dim {dim} is not divisible by encoder_attention_heads {self.num_heads}."
            )
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos = config.gru_rel_pos
        if self.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, GRU_GATE_COUNT * GRU_GATE_WIDTH)
            self.grep_a = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(config.num_buckets, self.num_heads)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _gated_bias(self, query: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """Scale the shared bias per query and head by a gate computed from the *unscaled* query (B, H, T, d)."""
        batch, heads, length, _ = query.shape
        gates = self.grep_linear(query).view(batch, heads, length, GRU_GATE_COUNT, GRU_GATE_WIDTH).sum(-1)
        gate_a, gate_b = torch.sigmoid(gates).chunk(GRU_GATE_COUNT, dim=-1)
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0
        return gate * position_bias

    def _bias(self, query: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor | None:
        """The additive attention bias: the relative bias, gated per query when the config says so."""
        if position_bias is None:
            return None
        return self._gated_bias(query, position_bias) if self.gru_rel_pos else position_bias

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        """x: (B, T, C); position_bias: (1, H, T, T) or None."""
        k = self._split_heads(self.k_proj(x))
        v = self._split_heads(self.v_proj(x))
        if self.attn_implementation == "sdpa":
            query = self._split_heads(self.q_proj(x))
            bias = self._bias(query, position_bias)
            context = F.scaled_dot_product_attention(query, k, v, attn_mask=bias, scale=self.scaling)
        else:
            context = self._eager_attention(x, k, v, position_bias)
        return self.out_proj(context.transpose(1, 2).reshape(x.shape))

    def _eager_attention(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, position_bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Upstream's arithmetic, operation for operation: (B, H, T, d) context."""
        q = self.q_proj(x) * self.scaling
        q = q * (1 / ATTENTION_SCORE_ALPHA)
        q = self._split_heads(q)
        scores = q @ k.transpose(-1, -2)
        scores = (scores - scores.amax(dim=-1, keepdim=True)) * ATTENTION_SCORE_ALPHA
        bias = self._bias(q * ATTENTION_SCORE_ALPHA / self.scaling, position_bias)  # undo both scalings, as upstream
        if bias is not None:
            scores = scores + bias
        probs = torch.softmax(scores, dim=-1).type_as(scores)
        return probs @ v


class BeatsEncoderLayer(nn.Module):
    """Transformer layer; post-LN with deep-norm residual scaling (or pre-LN when configured)."""

    def __init__(
        self,
        config: BeatsConfig,
        has_relative_attention_bias: bool,
        attn_implementation: str = DEFAULT_ATTN_IMPLEMENTATION,
    ) -> None:
        super().__init__()
        if config.activation_fn == "gelu":
            self.activation = gelu_fp32
        elif config.activation_fn == "relu":
            self.activation = F.relu
        else:
            raise UnsupportedModelError(f"BEATs activation_fn {config.activation_fn!r} is not supported (gelu, relu).")
        dim = config.encoder_embed_dim
        self.layer_norm_first = config.layer_norm_first
        self.residual_scale = config.deep_norm_alpha
        self.self_attn = BeatsAttention(config, has_relative_attention_bias, attn_implementation)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), position_bias)
            return x + self._feed_forward(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x * self.residual_scale + self.self_attn(x, position_bias))
        return self.final_layer_norm(x * self.residual_scale + self._feed_forward(x))


class BeatsEncoder(nn.Module):
    """Convolutional position embedding, then the layers; one relative bias table for all layers."""

    def __init__(self, config: BeatsConfig, attn_implementation: str = DEFAULT_ATTN_IMPLEMENTATION) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.config = config
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(dim, config.conv_pos, config.conv_pos_groups), SamePad(config.conv_pos), nn.GELU()
        )
        self.layer_norm = nn.LayerNorm(dim)
        relative = config.relative_position_embedding
        self.layers = nn.ModuleList(
            [BeatsEncoderLayer(config, relative, attn_implementation) for _ in range(config.encoder_layers)]
        )
        if relative:
            # Upstream shares layer 0's table with every layer (same module, so the checkpoint has
            # one key per layer, all holding the same tensor).
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = self.layers[0].self_attn.relative_attention_bias
        self.register_buffer("cached_position_bias", None, persistent=False)

    def compute_position_bias(self, seq_len: int) -> torch.Tensor:
        """(1, H, T, T) bias looked up from layer 0's table."""
        table = self.layers[0].self_attn.relative_attention_bias
        buckets = relative_position_buckets(
            seq_len, seq_len, self.config.num_buckets, self.config.max_distance, device=table.weight.device
        )
        return table(buckets).permute(2, 0, 1).unsqueeze(0)

    def position_bias(self, seq_len: int) -> torch.Tensor | None:
        if not self.config.relative_position_embedding:
            return None
        cached = self.cached_position_bias
        if cached is not None and cached.shape[-1] == seq_len:
            return cached
        return self.compute_position_bias(seq_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.config.layer_norm_first:
            x = self.layer_norm(x)
        position_bias = self.position_bias(x.shape[1])
        for layer in self.layers:
            x = layer(x, position_bias)
        if self.config.layer_norm_first:
            x = self.layer_norm(x)
        return x


class BeatsModel(nn.Module):
    """BEATs feature extractor: raw fbank (B, frames, mel) -> (B, T*F, encoder_embed_dim)."""

    def __init__(self, config: BeatsConfig, attn_implementation: str = DEFAULT_ATTN_IMPLEMENTATION) -> None:
        super().__init__()
        if config.deep_norm and config.layer_norm_first:
            raise UnsupportedModelError("BEATs config: deep_norm requires layer_norm_first = false.")
        self.config = config
        self.patch_embedding = nn.Conv2d(
            1,
            config.embed_dim,
            kernel_size=config.input_patch_size,
            stride=config.input_patch_size,
            bias=config.conv_bias,
        )
        self.layer_norm = nn.LayerNorm(config.embed_dim)
        self.post_extract_proj = (
            nn.Linear(config.embed_dim, config.encoder_embed_dim)
            if config.embed_dim != config.encoder_embed_dim
            else None
        )
        self.encoder = BeatsEncoder(config, attn_implementation)
        # The AudioSet classifier is in every released checkpoint but VideoLLaMA 2 never runs it.
        self.predictor = (
            nn.Linear(config.encoder_embed_dim, config.predictor_class) if config.finetuned_model else None
        )

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank: raw kaldi fbank (B, frames, mel bins), not normalised; returns (B, T*F, C).

        Patches are flattened time-major: the F frequency patches of time step 0 come first.
        """
        fbank = normalize_fbank(fbank.to(self.patch_embedding.weight.dtype))
        patches = self.patch_embedding(fbank.unsqueeze(1))  # (B, embed, T, F)
        features = self.layer_norm(patches.flatten(2).transpose(1, 2))
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        return self.encoder(features)

    @staticmethod
    def num_tokens(frames: int, mel_bins: int, patch_size: int) -> int:
        """Output length for an fbank of that size (trailing partial patches are dropped)."""
        return (frames // patch_size) * (mel_bins // patch_size)

    @property
    def attn_implementation(self) -> str:
        """How the layers compute attention ("sdpa" or "eager"; see the module docstring)."""
        return self.encoder.layers[0].self_attn.attn_implementation

    def set_attn_implementation(self, attn_implementation: str) -> None:
        """Switch every layer's attention (same weights, same results within rounding)."""
        check_attn_implementation(attn_implementation)
        for layer in self.encoder.layers:
            layer.self_attn.attn_implementation = attn_implementation

    def fold_weight_norm(self) -> None:
        """Make pos_conv a plain convolution (for ONNX export); outputs are unchanged."""
        self.encoder.pos_conv[0].fold()

    def precompute_position_bias(self, seq_len: int) -> None:
        """Cache the relative bias for one sequence length so an exported graph holds a constant.

        The cache is refreshed by `load_beats_state_dict`; other in-place weight edits must call this
        again.
        """
        if not self.config.relative_position_embedding:
            return
        with torch.no_grad():
            self.encoder.cached_position_bias = self.encoder.compute_position_bias(seq_len).detach().clone()


# ----------------------------------------------------------------------------- loading


def _shared_bias_copies(model: BeatsModel) -> set[str]:
    """Keys of the per-layer copies of the shared bias table beyond layer 0 (optional on load)."""
    if not model.config.relative_position_embedding:
        return set()
    return {RELATIVE_BIAS_KEY.format(i) for i in range(1, model.config.encoder_layers)}


def load_beats_state_dict(model: BeatsModel, state_dict: dict[str, torch.Tensor]) -> None:
    """Load checkpoint tensors (keys without `model.audio_tower.`) strictly.

    The relative bias table may be stored once (layer 0) or once per layer; layer 0's copy is the
    one the computation uses, so it wins when copies differ. Missing or unexpected keys and shape
    mismatches raise CheckpointError naming them.
    """
    # Only layer 0's copy is loaded: the other keys point at the same module and would overwrite it.
    load_exact(model, state_dict, "BEATs audio tower", tied=_shared_bias_copies(model))
    cached = model.encoder.cached_position_bias
    if cached is not None:
        model.precompute_position_bias(cached.shape[-1])
