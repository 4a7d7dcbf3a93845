"""Video-LLaMA (v1) against upstream's goldens, every case of every fixture present: prompt strings and
per-segment ids, every stored encoder intermediate, the spliced embeddings, logits (≤ 1e-4, fp32),
greedy ids and per-step logits; batched generation equals one-at-a-time."""
from __future__ import annotations

import pytest
import torch

from reference_v1_fixtures import (
    case_input,
    case_kind,
    case_question,
    load_v1_fixture,
    load_v1_model,
    v1_cases,
    v1_fixture_names,
)
from vl2cli.model.videollama.prompt import render

CASES = v1_cases()
FIXTURES = v1_fixture_names()
pytestmark = pytest.mark.skipif(not CASES, reason="no Video-LLaMA v1 reference fixtures found")
TOL = dict(atol=1e-4, rtol=1e-4)
#: golden tensor name → name in vl2's kept intermediates (audio trunk tensors are checked separately)
STAGES = ("eva_out", "image_embeds", "qformer_out", "video_qformer_in", "video_qformer_out", "video_tokens",
          "audio_feature", "audio_imagebind_out", "audio_qformer_in", "audio_qformer_out", "audio_tokens")


def _ids(case: str) -> str:
    return f"{case[0]}:{case[1]}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_prompt_string_and_segment_ids(monkeypatch, case):
    name, case_name = case
    fixture = load_v1_fixture(name)
    golden = fixture.cases()[case_name]
    model = load_v1_model(monkeypatch, name)
    messages = [(role, text) for role, text in golden["messages"][:-1]] + [(golden["messages"][-1][0], None)]
    assert render(model.template, golden["system"], messages) == golden["prompt"]
    assert model.tokenizer.segment_ids(golden["prompt"]) == golden["segment_ids"]
    question = case_question(golden)
    if question is not None:  # single-turn: vl2's own conversation building gives upstream's prompt
        item = case_input(fixture, case_name)
        system, _ = model.conversation(item, question)
        assert system == golden["system"]
        assert model.prompt(item, question) == golden["prompt"]
        assert model.segment_ids(item, question) == golden["segment_ids"]


@pytest.mark.parametrize("case", [c for c in CASES if f"{c[1]}.eva_out" in load_v1_fixture(c[0]).tensors
                                  or f"{c[1]}.audio_tokens" in load_v1_fixture(c[0]).tensors], ids=_ids)
def test_every_encoder_intermediate(monkeypatch, case):
    name, case_name = case
    fixture = load_v1_fixture(name)
    model = load_v1_model(monkeypatch, name)
    keep = [{}]
    blocks = model.encode([case_input(fixture, case_name)], keep=keep)[0]
    compared = 0
    for stage in STAGES:
        golden = fixture.case_tensor(case_name, stage)
        if golden is None:
            continue
        torch.testing.assert_close(keep[0][stage].float(), golden, **TOL, msg=lambda m, s=stage: f"{s}: {m}")
        compared += 1
    assert compared >= 6
    assert blocks[-1].shape == fixture.case_tensor(case_name, "video_tokens").shape[1:]


AUDIO_TRUNK_FIXTURES = [n for n in FIXTURES if any(k.endswith(".audio_trunk_in_first8") for k in load_v1_fixture(n).tensors)]


@pytest.mark.parametrize("name", AUDIO_TRUNK_FIXTURES or [
    pytest.param(None, marks=pytest.mark.skip(reason="no v1 fixture with audio trunk goldens"))])
def test_imagebind_audio_trunk_input_and_output(monkeypatch, name):
    fixture = load_v1_fixture(name)
    model = load_v1_model(monkeypatch, name)
    for key in [k for k in fixture.tensors if k.endswith(".audio_trunk_in_first8")]:
        case_name = key.split(".")[0]
        clips = case_input(fixture, case_name).fbank
        encoder = model.audio.encoder
        with torch.no_grad():
            tokens = encoder.tokens(clips.float())
            torch.testing.assert_close(tokens[:, :8], fixture.tensors[key], **TOL)
            x = tokens
            for block in encoder.blocks:
                x = block(x)
        torch.testing.assert_close(x[:, :8], fixture.tensors[f"{case_name}.audio_trunk_out_first8"], **TOL)


def _case_embeds(model, fixture, case_name: str) -> torch.Tensor:
    """vl2's spliced sequence for a case: its own encoders, upstream's prompt (multi-turn cases included)."""
    golden = fixture.cases()[case_name]
    item = case_input(fixture, case_name)
    blocks = model.encode([item])[0]
    segments = model.tokenizer.segment_ids(golden["prompt"])
    embed = model.llm.get_input_embeddings()
    pieces = []
    for k, ids in enumerate(segments):
        pieces.append(embed(torch.tensor(ids)))
        if k < len(blocks):
            pieces.append(blocks[k])
    return torch.cat(pieces)[None]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_spliced_embeddings_logits_and_greedy_decoding(monkeypatch, case):
    name, case_name = case
    fixture = load_v1_fixture(name)
    golden = fixture.cases()[case_name]
    model = load_v1_model(monkeypatch, name)
    with torch.inference_mode():
        embeds = _case_embeds(model, fixture, case_name)
        torch.testing.assert_close(embeds, fixture.case_tensor(case_name, "inputs_embeds"), **TOL)
        assert embeds.shape[1] == golden["spliced_length"]
        positions = fixture.case_tensor(case_name, "logits_positions")
        logits = model.llm(inputs_embeds=embeds).logits
        torch.testing.assert_close(logits[:, positions], fixture.case_tensor(case_name, "logits"), **TOL)
        expected_ids = fixture.case_tensor(case_name, "generated_ids")
        out = model.llm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                 max_new_tokens=expected_ids.shape[1], do_sample=False, eos_token_id=model.eos_token_ids,
                                 pad_token_id=model.pad_token_id, output_logits=True, return_dict_in_generate=True,
                                 temperature=None, top_p=None, top_k=None)
    assert out.sequences[0, -expected_ids.shape[1]:].tolist() == expected_ids[0].tolist() == golden["generated_ids"]
    steps = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(steps, fixture.case_tensor(case_name, "gen_step_logits"), **TOL)
    assert model.decode_answer(golden["generated_ids"]) == golden["answer_text"]


@pytest.mark.parametrize("name", FIXTURES)
def test_library_generate_is_upstream_greedy_and_batched_equals_alone(monkeypatch, name):
    """`generate` (the path `vl2 caption` takes) over every single-turn case: alone and all in one batch."""
    fixture = load_v1_fixture(name)
    model = load_v1_model(monkeypatch, name)
    singles = [c for c, g in fixture.cases().items() if case_question(g) is not None]
    items = [case_input(fixture, c) for c in singles]
    questions = [case_question(fixture.cases()[c]) for c in singles]
    for item, question, case_name in zip(items, questions, singles):
        expected = fixture.cases()[case_name]
        embeds, mask = model.prepare_inputs([item], [question])
        torch.testing.assert_close(embeds, fixture.case_tensor(case_name, "inputs_embeds"), **TOL)
        alone = model.generate([item], [question], max_new_tokens=len(expected["generated_ids"]))[0]
        assert alone.token_ids == expected["generated_ids"]
        assert alone.text == expected["answer_text"]
        assert alone.stopped_on_eos == expected["stopped_early"]
    batched = model.generate(items, questions, max_new_tokens=max(len(fixture.cases()[c]["generated_ids"]) for c in singles))
    for generation, case_name in zip(batched, singles):
        assert generation.token_ids[: len(fixture.cases()[case_name]["generated_ids"])] == fixture.cases()[case_name]["generated_ids"]
    assert {case_kind(fixture.cases()[c]) for c in singles} >= {"video", "image", "text"}


@pytest.mark.parametrize("name", FIXTURES)
def test_label_scoring_is_the_shared_one_batched_equals_alone(monkeypatch, name):
    """Label scoring is the shared core's: each label's log-likelihood equals a plain forward over the
    spliced prompt followed by the label's tokens and EOS, and a batch scores as files alone do."""
    fixture = load_v1_fixture(name)
    model = load_v1_model(monkeypatch, name)
    singles = [c for c, g in fixture.cases().items() if case_question(g) is not None][:3]
    items = [case_input(fixture, c) for c in singles]
    questions = [case_question(fixture.cases()[c]) for c in singles]
    labels = ["a dog", "music", fixture.cases()[singles[0]]["answer_text"] or "x"]
    batched = model.score_labels_batch(items, questions, labels)
    for item, question, scores in zip(items, questions, batched):
        alone = model.score_labels(item, question, labels)
        torch.testing.assert_close(torch.tensor(scores.log_likelihoods), torch.tensor(alone.log_likelihoods), atol=1e-4, rtol=1e-5)
        with torch.inference_mode():
            embeds, _ = model.prepare_inputs([item], [question])
            ids = model.label_token_ids(labels[1]) + [model.eos_token_ids[0]]
            full = torch.cat([embeds[0], model.llm.get_input_embeddings()(torch.tensor(ids))])[None]
            logprobs = torch.log_softmax(model.llm(inputs_embeds=full).logits[0].double(), dim=-1)
        start = embeds.shape[1] - 1
        expected = sum(logprobs[start + k, t].item() for k, t in enumerate(ids))
        assert alone.log_likelihoods[1] == pytest.approx(expected, rel=1e-6, abs=1e-4)  # a sum over tokens
