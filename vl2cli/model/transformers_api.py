"""The names vl2 uses of transformers' caches and causal LMs, looked up once against the installed version.

Why: transformers renames things between minor releases. 5.24 renamed a causal LM's `past_key_values`
argument and output to `cache` (the old name still works there, with a warning, until 5.40), and its
`StaticLayer` dropped the `dtype` attribute vl2 once read. vl2 supports every transformers release in
the range pyproject.toml declares (5.17, the GPU machine's, to the newest tested); the few names it needs
are found here, through public API (signatures, documented methods), so a release that changes them gives
one clear error naming the version instead of an AttributeError in the middle of a run.
"""
from __future__ import annotations

import inspect
from functools import cache
from typing import Any

import transformers
from transformers import StaticCache

from ..errors import TransformersApiError

#: The argument (and output field) names transformers has used for a causal LM's key/value cache, newest first.
CACHE_NAMES = ("cache", "past_key_values")
#: What vl2's static decode loop calls on a `StaticCache` (all public, documented methods and properties).
STATIC_CACHE_API = ("early_initialization", "reset", "is_sliding")



def transformers_version() -> str:
    return transformers.__version__


@cache
def _cache_argument_of(forward_owner: type) -> str:
    parameters = inspect.signature(forward_owner.forward).parameters
    for name in CACHE_NAMES:
        if name in parameters:
            return name
    raise TransformersApiError(
        f"transformers {transformers_version()}: {forward_owner.__name__}.forward takes none of "
        f"{', '.join(CACHE_NAMES)}; this vl2 release does not support that transformers version "
        "(install the versions in vl2's lock file: make install)"
    )


def cache_argument(model: Any) -> str:
    """The keyword under which `model.forward` takes its key/value cache in this transformers release."""
    return _cache_argument_of(type(model))


def with_cache(model: Any, cache_value: Any) -> dict[str, Any]:
    """`{name: cache}` for `model(**inputs, **with_cache(model, cache))`, without a deprecation warning."""
    return {cache_argument(model): cache_value}


def returned_cache(output: Any) -> Any:
    """The key/value cache a causal LM's forward returned (`output.cache`, or `output.past_key_values`)."""
    for name in CACHE_NAMES:
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    raise TransformersApiError(
        f"transformers {transformers_version()}: the model returned no cache (looked for {', '.join(CACHE_NAMES)})"
    )


def static_cache_api_problem() -> str | None:
    """Why this transformers release's `StaticCache` lacks what the static decode loop calls, or None."""
    missing = [name for name in STATIC_CACHE_API if not hasattr(StaticCache, name)]
    if missing:
        return f"transformers {transformers_version()}'s StaticCache has no {', '.join(missing)}"
    return None


def set_attention_implementation(config: Any, name: str) -> None:
    """Make a config select attention implementation `name` (read by transformers' layers at every call)."""
    if not hasattr(config, "_attn_implementation"):
        raise TransformersApiError(
            f"transformers {transformers_version()}: a model config has no attention implementation attribute"
        )
    config._attn_implementation = name


def attention_implementation(config: Any) -> str:
    """The attention implementation a model's config selects (transformers keeps it on the config)."""
    try:
        return config._attn_implementation
    except AttributeError:
        raise TransformersApiError(
            f"transformers {transformers_version()}: a model config has no attention implementation attribute"
        ) from None
