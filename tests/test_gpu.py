"""CUDA paths: the same parity on a GPU (fp32, TF32 off) and bf16 generation. Skipped without a GPU."""
from __future__ import annotations

import pytest
import torch

from reference_fixtures import case_input, fixture_names, load_reference, use_fixture_hub

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not fixture_names(), reason="no reference fixtures found"),
]


@pytest.mark.parametrize("name", fixture_names())
def test_cuda_fp32_logits_match_upstream(monkeypatch, name):
    from vl2cli.model.videollama2 import VideoLlama2

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    model = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cuda", dtype="fp32")
    for case_name, case in fixture.cases().items():
        if len(case.get("images_arg") or [None]) != 1:
            continue
        logits, _ = model.forward_logits([case_input(fixture, case)], [case["instruction"]])
        expected = fixture.tensors[f"{case_name}.logits"]
        positions = fixture.tensors[f"{case_name}.logits_positions"]
        assert (logits[:, positions].cpu() - expected).abs().max() <= 1e-4, case_name


@pytest.mark.parametrize("name", fixture_names())
def test_cuda_bf16_default_generates(monkeypatch, name):
    from vl2cli.model.videollama2 import VideoLlama2

    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    model = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cuda")
    assert model.dtype == torch.bfloat16
    case = next(iter(fixture.cases().values()))
    generations = model.generate([case_input(fixture, case)], [case["instruction"] if isinstance(case["instruction"], str) else case["instruction"][0]], max_new_tokens=4)
    assert len(generations[0].token_ids) >= 1
