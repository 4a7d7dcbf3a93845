"""Loading a component's weights exactly: every tensor the module has, no other, each of its shape.

torch's `load_state_dict(strict=True)` raises a RuntimeError listing every key; a checkpoint that does not
fit its config (another model size, a truncated conversion, the wrong file) should instead be a
`CheckpointError` that names the component and the first few keys, the same way for every family and
component (VideoLLaMA 2's tower, connector, projector and BEATs; Video-LLaMA's EVA ViT, Q-Formers,
ImageBind audio encoder and LLaMA). Shapes are checked before anything is copied, so a failed load
leaves the module as it was.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import nn

from ..errors import CheckpointError

#: Keys named in an error; a whole component's keys would be thousands of names.
KEYS_SHOWN = 5


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:KEYS_SHOWN])
    return shown + (f" (and {len(keys) - KEYS_SHOWN} more)" if len(keys) > KEYS_SHOWN else "")


def load_exact(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str, *, assign: bool = False,
               tied: Collection[str] = ()) -> None:
    """Load `state_dict` into `module` or raise a CheckpointError naming `what` (e.g. "video connector").

    `assign`: take the tensors themselves (modules built on the meta device). `tied`: keys of the module
    that alias another key's tensor (BEATs stores its shared position bias per layer or once): they may
    be absent, and when present they are not loaded, so the tensor they alias wins."""
    own = module.state_dict(keep_vars=True)
    tied = set(tied)
    missing = sorted(set(own) - tied - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        parts = ([f"missing keys: {_listed(missing)}"] if missing else []) + \
                ([f"unexpected keys: {_listed(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"{what} weights do not match the model; " + "; ".join(parts))
    to_load = {key: tensor for key, tensor in state_dict.items() if key not in tied}
    bad_shapes = [f"{key} (checkpoint {tuple(tensor.shape)}, model {tuple(own[key].shape)})"
                  for key, tensor in sorted(to_load.items()) if tuple(tensor.shape) != tuple(own[key].shape)]
    if bad_shapes:
        raise CheckpointError(f"{what} weights have the wrong shape: {_listed(bad_shapes)}")
    module.load_state_dict(to_load, strict=False, assign=assign)
