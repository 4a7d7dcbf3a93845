"""ImageBind's audio encoder (the only ImageBind modality Video-LLaMA uses), written for vl2.

No kept library ships ImageBind, and its reference code is CC BY-NC-SA, so this is a clean
implementation from the architecture's facts. Input: (N, 1, 128, 204) normalised log-mel clips.
Patches: Conv2d(1, E, 16, stride 10, no bias) → (E, 12, 19) → 228 tokens (mel-major) → LayerNorm(E,
eps 1e-5) → prepend the CLS token → + learned positions (229). Blocks (pre-norm, LayerNorm eps 1e-6):
`x + attn(norm_1(x))` with torch's MultiheadAttention carrying a learned extra key/value position
(`add_bias_kv`), `x + mlp(norm_2(x))` (Linear E→4E, exact GELU, Linear). Head: LayerNorm(E, eps 1e-6)
of token 0 (the "audio feature"), Linear(E, out, no bias), L2 normalisation, × min(exp(log scale), 100).

Weights come from the full `imagebind_huge.pth` (upstream loads every modality strictly); only the
`*.audio.*` entries are read, renamed from ImageBind's names.
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import CheckpointError
from ..strict_load import load_exact

PATCH_KERNEL = 16
PATCH_STRIDE = 10
STEM_LAYER_NORM_EPS = 1e-5
BLOCK_LAYER_NORM_EPS = 1e-6
MLP_RATIO = 4
MAX_LOGIT_SCALE = 100.0
#: Head count of ImageBind-Huge's audio trunk (width 1024); not stored in the file.
KNOWN_HEADS = {1024: 16, 768: 12}


class AudioBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(width, eps=BLOCK_LAYER_NORM_EPS)
        self.attn = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=True, batch_first=True)
        self.norm_2 = nn.LayerNorm(width, eps=BLOCK_LAYER_NORM_EPS)
        self.fc1 = nn.Linear(width, MLP_RATIO * width)
        self.fc2 = nn.Linear(MLP_RATIO * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm_1(x)
        x = x + self.attn(normed, normed, normed, need_weights=False)[0]
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm_2(x))))


class ImageBindAudioEncoder(nn.Module):
    """(N, 1, 128, 204) clips → (audio feature (N, E), embedding (N, out)); `trunk_input` kept for checks."""

    def __init__(self, width: int, depth: int, heads: int, out_dim: int, num_positions: int) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, width, kernel_size=PATCH_KERNEL, stride=PATCH_STRIDE, bias=False)
        self.patch_norm = nn.LayerNorm(width, eps=STEM_LAYER_NORM_EPS)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, width))
        self.blocks = nn.ModuleList(AudioBlock(width, heads) for _ in range(depth))
        self.head_norm = nn.LayerNorm(width, eps=BLOCK_LAYER_NORM_EPS)
        self.head = nn.Linear(width, out_dim, bias=False)
        self.register_buffer("log_logit_scale", torch.zeros(()))

    def tokens(self, clips: torch.Tensor) -> torch.Tensor:
        """The trunk's input: patch tokens, normed, after the CLS token, plus positions."""
        patches = self.patch(clips).flatten(2).transpose(1, 2)
        patches = self.patch_norm(patches)
        tokens = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        if tokens.shape[1] != self.pos_embed.shape[1]:
            raise ValueError(f"audio clips give {tokens.shape[1]} tokens, the position table has {self.pos_embed.shape[1]}")
        return tokens + self.pos_embed

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.tokens(clips)
        for block in self.blocks:
            x = block(x)
        feature = self.head_norm(x)[:, 0]
        embedding = nn.functional.normalize(self.head(feature), dim=-1)
        return feature, embedding * torch.clamp(self.log_logit_scale.exp(), max=MAX_LOGIT_SCALE)


_PRE = "modality_preprocessors.audio."
_TRUNK = "modality_trunks.audio.blocks."
_HEAD = "modality_heads.audio."
_POST = "modality_postprocessors.audio.1.log_logit_scale"


def build_imagebind_audio(state_dict: dict[str, torch.Tensor], *, heads: int | None = None) -> ImageBindAudioEncoder:
    """The audio encoder from a whole-ImageBind state dict (`imagebind_huge.pth`)."""
    try:
        width = state_dict[_PRE + "cls_token"].shape[-1]
        positions = state_dict[_PRE + "pos_embedding_helper.pos_embed"].shape[1]
        out_dim = state_dict[_HEAD + "2.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"imagebind_huge.pth has no {exc.args[0]}: not an ImageBind state dict") from exc
    heads = heads or KNOWN_HEADS.get(width)
    if not heads:
        raise CheckpointError(f"ImageBind audio width {width}: the head count is not stored in the file; pass it (imagebind_heads).")
    depth = 1 + max(int(k[len(_TRUNK):].split(".")[0]) for k in state_dict if k.startswith(_TRUNK))
    with torch.device("meta"):  # every parameter is loaded next
        model = ImageBindAudioEncoder(width, depth, heads, out_dim, positions)
    renamed = {
        "patch.weight": state_dict[_PRE + "rgbt_stem.proj.weight"],
        "patch_norm.weight": state_dict[_PRE + "rgbt_stem.norm_layer.weight"],
        "patch_norm.bias": state_dict[_PRE + "rgbt_stem.norm_layer.bias"],
        "cls_token": state_dict[_PRE + "cls_token"],
        "pos_embed": state_dict[_PRE + "pos_embedding_helper.pos_embed"],
        "head_norm.weight": state_dict[_HEAD + "0.weight"],
        "head_norm.bias": state_dict[_HEAD + "0.bias"],
        "head.weight": state_dict[_HEAD + "2.weight"],
        "log_logit_scale": state_dict[_POST],
    }
    for key, tensor in state_dict.items():
        if key.startswith(_TRUNK):
            index, rest = key[len(_TRUNK):].split(".", 1)
            rest = rest.replace("mlp.fc1.", "fc1.").replace("mlp.fc2.", "fc2.")
            renamed[f"blocks.{index}.{rest}"] = tensor
    load_exact(model, {k: v.float() for k, v in renamed.items()}, "ImageBind audio encoder (imagebind_huge.pth)",
                assign=True)
    return model.eval()
