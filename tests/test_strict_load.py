"""One strict loader for every model family: a checkpoint that does not fit is a CheckpointError that
names the component and the keys, and leaves the module as it was."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from vl2cli.errors import CheckpointError
from vl2cli.model.strict_load import KEYS_SHOWN, load_exact

MODEL_PACKAGE = Path(__file__).resolve().parents[1] / "vl2cli" / "model"


def _module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))


def _weights() -> dict[str, torch.Tensor]:
    return {key: torch.full_like(value, 0.5) for key, value in _module().state_dict().items()}


def test_an_exact_state_dict_loads_every_tensor() -> None:
    module = _module()
    load_exact(module, _weights(), "test connector")
    assert all(torch.equal(value, torch.full_like(value, 0.5)) for value in module.state_dict().values())


@pytest.mark.parametrize("change, expected", [
    (lambda sd: sd.pop("1.bias"), r"test connector weights do not match the model; missing keys: 1\.bias$"),
    (lambda sd: sd.update({"2.weight": torch.zeros(1)}), r"test connector .*unexpected keys: 2\.weight$"),
    (lambda sd: sd.update({"0.weight": torch.zeros(4, 5)}),
     r"test connector weights have the wrong shape: 0\.weight \(checkpoint \(4, 5\), model \(4, 3\)\)$"),
], ids=["missing", "unexpected", "wrong shape"])
def test_a_mismatch_is_a_checkpoint_error_naming_the_component(change, expected: str) -> None:
    module, weights = _module(), _weights()
    before = {key: value.clone() for key, value in module.state_dict().items()}
    change(weights)
    with pytest.raises(CheckpointError, match=expected):
        load_exact(module, weights, "test connector")
    assert all(torch.equal(before[key], value) for key, value in module.state_dict().items()), "module untouched"


def test_only_the_first_keys_are_named() -> None:
    many = nn.ModuleList(nn.Linear(1, 1) for _ in range(KEYS_SHOWN + 3))
    with pytest.raises(CheckpointError, match=r"missing keys: (\S+, ){4}\S+ \(and 11 more\)$"):
        load_exact(many, {}, "test tower")


def test_tied_keys_may_be_absent_and_are_never_loaded() -> None:
    shared = nn.Linear(2, 2, bias=False)
    module = nn.ModuleDict({"first": shared, "second": shared})
    load_exact(module, {"first.weight": torch.ones(2, 2), "second.weight": torch.zeros(2, 2)}, "tied",
               tied={"second.weight"})
    assert torch.equal(shared.weight, torch.ones(2, 2)), "the aliased copy does not overwrite the first"
    load_exact(module, {"first.weight": torch.full((2, 2), 2.0)}, "tied", tied={"second.weight"})
    assert torch.equal(shared.weight, torch.full((2, 2), 2.0))


def test_assign_takes_the_tensors_of_a_meta_module() -> None:
    with torch.device("meta"):
        module = nn.Linear(2, 2)
    weights = {"weight": torch.ones(2, 2), "bias": torch.zeros(2)}
    load_exact(module, weights, "meta", assign=True)
    assert module.weight.device.type == "cpu" and torch.equal(module.weight, torch.ones(2, 2))


def test_no_family_calls_load_state_dict_itself() -> None:
    """Every component goes through load_exact (strict_load.py is the one caller of torch's loader)."""
    callers = []
    for path in sorted(MODEL_PACKAGE.rglob("*.py")):
        if path.name == "strict_load.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "load_state_dict":
                callers.append(f"{path.relative_to(MODEL_PACKAGE)}:{node.lineno}")
    assert not callers, callers
