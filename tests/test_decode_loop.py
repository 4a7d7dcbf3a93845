"""The static-cache greedy loop (vl2cli/model/decode_loop.py) against transformers' `generate`.

On CPU the loop runs without CUDA graphs: every step goes through the same forward a graph would
capture (static cache, 4-D boolean mask, grouped decode attention), so token parity here covers what
the GPU replays. tests/test_gpu.py repeats the parity with graphs on CUDA.
"""
from __future__ import annotations

import contextlib
import logging

import pytest
import torch
from transformers import GenerationConfig

from reference_fixtures import case_input, case_instructions, fixture_names, load_fixture_model, load_reference
from vl2cli.errors import Vl2Error
from vl2cli.model import decode_loop
from vl2cli.model.decode_loop import (
    CACHE_LENGTH_MULTIPLE,
    StaticCacheDecoder,
    grouped_decode_attention,
    unsupported_generation_fields,
)

FIXTURES = fixture_names()
CASES = [(name, case) for name in FIXTURES for case in load_reference(name).cases()]
#: Longer than the goldens' 8 tokens: the random-weight fixtures start repeating tokens within 12
#: steps, so the repetition processors change the output (checked below) and parity tests them.
MAX_NEW_TOKENS = 12
#: Qwen2-7B-Instruct's generation_config.json value, which upstream's greedy decoding applies.
QWEN2_INSTRUCT_REPETITION_PENALTY = 1.05
#: Strong enough to change the fixtures' tokens.
STRONG_REPETITION_PENALTY = 1.5
NO_REPEAT_NGRAM_SIZE = 2
SETTINGS = {
    "plain": {},
    "qwen2-instruct-penalty": {"repetition_penalty": QWEN2_INSTRUCT_REPETITION_PENALTY},
    "strong-penalty-and-ngrams": {"repetition_penalty": STRONG_REPETITION_PENALTY, "no_repeat_ngram_size": NO_REPEAT_NGRAM_SIZE},
}

pytestmark = pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")


def _greedy_config(model, **fields) -> GenerationConfig:
    config = model.generation_config(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, temperature=None, top_p=None)
    for key, value in fields.items():
        setattr(config, key, value)
    return config


def _case_batch(fixture, case_names: list[str]):
    items, instructions = [], []
    for case_name in case_names:
        case = fixture.cases()[case_name]
        count = len(case.get("images_arg") or [None])
        items += [case_input(fixture, case, i) for i in range(count)]
        instructions += case_instructions(case)
    return items, instructions


def _unequal_batch(fixture) -> list[str]:
    cases = fixture.cases()
    if "video" in cases and "video_long" in cases:
        return ["video", "video_long"]
    return [c for c in cases if c in ("av", "text", "image")][:3]


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("name,case_name", CASES)
def test_static_loop_equals_generate_on_every_case(monkeypatch, name, case_name, setting):
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    items, instructions = _case_batch(fixture, [case_name])
    embeds, mask = model.prepare_inputs(items, instructions)
    config = _greedy_config(model, **SETTINGS[setting])
    expected = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config)
    decoder = StaticCacheDecoder(model.llm, cuda_graphs=False)
    assert torch.equal(decoder.generate(embeds, mask, config), expected)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("name", FIXTURES)
def test_static_loop_batch_of_unequal_prompts(monkeypatch, name, setting):
    """Left-padded rows decode as they do alone, and as `generate` decodes the same batch.

    With a repetition penalty the batched `generate` of transformers 5.23 is not the reference: it
    exempts a padded row's first generated tokens from the penalty (see VideoLlama2._dynamic_generate and
    test_reference_parity.py::test_batch_with_repetition_penalty_equals_one_at_a_time);
    one-at-a-time `generate` is.
    """
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    items, instructions = _case_batch(fixture, _unequal_batch(fixture))
    embeds, mask = model.prepare_inputs(items, instructions)
    assert not mask.all(), "the batch must mix prompt lengths"
    config = _greedy_config(model, **SETTINGS[setting])
    decoder = StaticCacheDecoder(model.llm, cuda_graphs=False)
    batched = decoder.generate(embeds, mask, config)
    if not SETTINGS[setting]:
        assert torch.equal(batched, model.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config))
    for row, (item, instruction) in enumerate(zip(items, instructions)):
        alone_embeds, alone_mask = model.prepare_inputs([item], [instruction])
        alone = model.llm.generate(inputs_embeds=alone_embeds, attention_mask=alone_mask, generation_config=config)[0]
        assert batched[row, : len(alone)].tolist() == alone.tolist(), f"row {row}"


@pytest.mark.parametrize("name", FIXTURES)
def test_processor_settings_change_the_tokens(monkeypatch, name):
    """Guards the parity tests' power: the processors must actually bite on some case of the fixture."""
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    decoder = StaticCacheDecoder(model.llm, cuda_graphs=False)
    changed = []
    for case_name in fixture.cases():
        embeds, mask = model.prepare_inputs(*_case_batch(fixture, [case_name]))
        plain = decoder.generate(embeds, mask, _greedy_config(model))
        processed = decoder.generate(embeds, mask, _greedy_config(model, **SETTINGS["strong-penalty-and-ngrams"]))
        if not torch.equal(plain, processed):
            changed.append(case_name)
    assert changed, "no case's tokens changed: the processor parity above tests nothing"


@pytest.mark.parametrize("name", FIXTURES)
def test_rows_that_finish_pad_and_the_loop_stops_when_all_have(monkeypatch, name):
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    items, instructions = _case_batch(fixture, _unequal_batch(fixture)[:2])
    embeds, mask = model.prepare_inputs(items, instructions)
    free_run = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=_greedy_config(model, eos_token_id=[]))
    # make row 0's 2nd token and row 1's 4th token end-of-sequence ids
    first_stop, last_stop = 1, 3
    stop_ids = [int(free_run[0, first_stop]), int(free_run[1, last_stop])]
    finish = [next(k for k, t in enumerate(row) if t in stop_ids) for row in free_run.tolist()]
    assert max(finish) + 1 < MAX_NEW_TOKENS, "the chosen ids must stop the batch early"
    config = _greedy_config(model, eos_token_id=stop_ids)
    decoder = StaticCacheDecoder(model.llm, cuda_graphs=False)
    tokens = decoder.generate(embeds, mask, config)
    assert tokens.shape == (2, max(finish) + 1)
    for row, stop in enumerate(finish):
        assert tokens[row, : stop + 1].tolist() == free_run[row, : stop + 1].tolist()
        assert (tokens[row, stop + 1 :] == config.pad_token_id).all(), "finished rows run on as padding"
    assert torch.equal(tokens, model.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config))


def test_unsupported_settings_are_named():
    greedy = GenerationConfig(max_new_tokens=4, do_sample=False, eos_token_id=[1, 2], pad_token_id=1,
                              repetition_penalty=QWEN2_INSTRUCT_REPETITION_PENALTY, temperature=0.7, top_k=20)
    assert unsupported_generation_fields(greedy) == []
    assert unsupported_generation_fields(GenerationConfig(max_new_tokens=4, do_sample=True)) == ["do_sample=True"]
    assert unsupported_generation_fields(GenerationConfig(max_new_tokens=4, num_beams=2)) == ["num_beams=2"]
    assert unsupported_generation_fields(GenerationConfig(max_new_tokens=4, suppress_tokens=[5])) == ["suppress_tokens=[5]"]
    assert unsupported_generation_fields(GenerationConfig()) == ["max_new_tokens unset"]


@pytest.mark.parametrize("name", FIXTURES[:1])
def test_sampling_falls_back_to_generate_and_says_so_once(monkeypatch, caplog, name):
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    items, instructions = _case_batch(fixture, [next(iter(fixture.cases()))])
    embeds, mask = model.prepare_inputs(items, instructions)
    sampling = model.generation_config(max_new_tokens=2, do_sample=True, temperature=None, top_p=None)
    with pytest.raises(ValueError, match="do_sample=True"):
        StaticCacheDecoder(model.llm, cuda_graphs=False).generate(embeds, mask, sampling)

    monkeypatch.setattr(decode_loop, "_logged_fallbacks", set())
    static_calls = []
    monkeypatch.setattr(StaticCacheDecoder, "generate", lambda self, *args: static_calls.append(args))
    with caplog.at_level(logging.INFO, logger=decode_loop.__name__):
        for _ in range(2):
            generations = model.generate(items, instructions, max_new_tokens=2, do_sample=True, decode_loop="static")
            assert len(generations[0].token_ids) >= 1
    assert static_calls == []
    fallbacks = [r.getMessage() for r in caplog.records if "do_sample=True" in r.getMessage()]
    assert len(fallbacks) == 1, fallbacks


@pytest.mark.parametrize("name", FIXTURES)
def test_generate_static_equals_dynamic_and_auto_is_dynamic_on_cpu(monkeypatch, name):
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    items, instructions = _case_batch(fixture, _unequal_batch(fixture))
    dynamic = model.generate(items, instructions, max_new_tokens=MAX_NEW_TOKENS, decode_loop="dynamic")
    static = model.generate(items, instructions, max_new_tokens=MAX_NEW_TOKENS, decode_loop="static")
    assert [g.token_ids for g in static] == [g.token_ids for g in dynamic]
    assert [g.text for g in static] == [g.text for g in dynamic]
    monkeypatch.setattr(StaticCacheDecoder, "generate", lambda *a, **k: pytest.fail("auto must not use the static loop on CPU"))
    auto = model.generate(items, instructions, max_new_tokens=MAX_NEW_TOKENS)
    assert [g.token_ids for g in auto] == [g.token_ids for g in dynamic]
    with pytest.raises(Vl2Error, match="decode loop"):
        model.generate(items, instructions, max_new_tokens=2, decode_loop="fast")


@pytest.mark.parametrize("query_length", [1, 3])
def test_grouped_decode_attention_equals_repeated_kv_sdpa(query_length):
    """Folding a K/V head's query heads into query rows is the same arithmetic as repeating K/V."""
    generator = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, keys, head_dim = 3, 8, 2, 40, 16
    query = torch.randn(batch, heads, query_length, head_dim, generator=generator)
    key = torch.randn(batch, kv_heads, keys, head_dim, generator=generator)
    value = torch.randn(batch, kv_heads, keys, head_dim, generator=generator)
    mask = torch.rand(batch, 1, query_length, keys, generator=generator) > 0.3
    mask[..., 0] = True  # every query attends to something
    groups = heads // kv_heads
    repeated_key = key.repeat_interleave(groups, dim=1)
    repeated_value = value.repeat_interleave(groups, dim=1)
    expected = torch.nn.functional.scaled_dot_product_attention(query, repeated_key, repeated_value, attn_mask=mask)
    actual, weights = grouped_decode_attention(torch.nn.Module(), query, key, value, mask)
    assert weights is None
    assert actual.shape == (batch, query_length, heads, head_dim)
    torch.testing.assert_close(actual, expected.transpose(1, 2), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", FIXTURES[:1])
def test_buckets_are_reused_while_they_fit(monkeypatch, name):
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    cases = list(fixture.cases())
    prompts = {c: model.prepare_inputs(*_case_batch(fixture, [c])) for c in cases}
    by_length = sorted((embeds.shape[1], c) for c, (embeds, _) in prompts.items() if embeds.shape[0] == 1)
    (short_length, short), (long_length, long) = by_length[0], by_length[-1]
    assert short_length < long_length
    decoder = StaticCacheDecoder(model.llm, cuda_graphs=False)
    config = _greedy_config(model)
    decoder.generate(*prompts[long], config)
    assert decoder.buckets_built == 1
    assert decoder._state.cache_length % CACHE_LENGTH_MULTIPLE == 0
    assert decoder._state.cache_length >= long_length + MAX_NEW_TOKENS - 1
    expected = model.llm.generate(inputs_embeds=prompts[short][0], attention_mask=prompts[short][1], generation_config=config)
    assert torch.equal(decoder.generate(*prompts[short], config), expected), "a reused, longer cache gives the same tokens"
    assert decoder.buckets_built == 1
    config.max_new_tokens = decoder._state.cache_length  # needs a longer cache: a new bucket
    config.eos_token_id = []
    decoder.generate(*prompts[short], config)
    assert decoder.buckets_built == 2


class _EagerGraph:
    """Stands in for torch.cuda.CUDAGraph on CPU: `replay` re-runs the step from the decoder's
    buffers and writes the logits into the tensor the capture returned, as a replay does."""

    decoder: StaticCacheDecoder | None = None

    def replay(self) -> None:
        state = self.decoder._state
        state.graph_logits.copy_(self.decoder._forward_step(state))


@pytest.mark.parametrize("name", FIXTURES)
def test_replay_bookkeeping_with_an_eager_stand_in_for_cuda_graphs(monkeypatch, name):
    """Everything around the graph (warm-up, capture, cache reset, buffers updated in place between
    replays, the replay's output buffer) on CPU; the real capture is tests/test_gpu.py's."""
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)

    class NoStream:
        def __init__(self, *args, **kwargs):
            pass

        def wait_stream(self, other):
            pass

    @contextlib.contextmanager
    def no_context(*args, **kwargs):
        yield

    monkeypatch.setattr(decode_loop, "cuda_graphs_unsupported", lambda llm: None)
    monkeypatch.setattr(torch.cuda, "Stream", NoStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *args: NoStream())
    monkeypatch.setattr(torch.cuda, "stream", no_context)
    monkeypatch.setattr(torch.cuda, "graph", no_context)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _EagerGraph)
    decoder = StaticCacheDecoder(model.llm, cuda_graphs=True)
    monkeypatch.setattr(_EagerGraph, "decoder", decoder)
    items, instructions = _case_batch(fixture, _unequal_batch(fixture))
    embeds, mask = model.prepare_inputs(items, instructions)
    config = _greedy_config(model)
    tokens = decoder.generate(embeds, mask, config)
    assert isinstance(decoder._state.graph, _EagerGraph)
    assert torch.equal(tokens, model.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config))
    again = decoder.generate(embeds, mask, config)  # the same bucket, replayed from a reset cache
    assert decoder.buckets_built == 1
    assert torch.equal(again, tokens)


# ------------------------------------------------------- the transformers release vl2 runs on
def test_a_bucket_is_reused_across_calls_of_the_same_dtype(monkeypatch):
    """The second call that fits a bucket reuses it (transformers 5.24's StaticLayer dropped `dtype`,
    which the reuse check once read: every reuse raised AttributeError)."""
    name = FIXTURES[0]
    model = load_fixture_model(monkeypatch, name)
    items, instructions = _case_batch(load_reference(name), [next(iter(load_reference(name).cases()))])
    embeds, mask = model.prepare_inputs(items, instructions)
    decoder = StaticCacheDecoder(model.llm, cuda_graphs=False)
    config = _greedy_config(model)
    first = decoder.generate(embeds, mask, config)
    assert torch.equal(decoder.generate(embeds, mask, config), first)
    assert decoder.buckets_built == 1
    assert decoder._state.dtype == embeds.dtype


def test_a_static_cache_without_the_api_the_loop_calls_falls_back_naming_the_version(monkeypatch, caplog):
    """A transformers release whose StaticCache lost a method the loop calls is a stated reason to use
    `generate` (with the version in it), not an AttributeError in the middle of a run."""
    import transformers
    from transformers import StaticCache

    name = FIXTURES[0]
    model = load_fixture_model(monkeypatch, name)
    owner = next(k for k in StaticCache.__mro__ if "early_initialization" in vars(k))
    monkeypatch.delattr(owner, "early_initialization")
    decoder = StaticCacheDecoder(model.llm, cuda_graphs=False)
    reason = decoder.unsupported_reason(_greedy_config(model))
    assert reason and transformers.__version__ in reason and "early_initialization" in reason
    fixture = load_reference(name)
    case_name = next(iter(fixture.cases()))
    items, instructions = _case_batch(fixture, [case_name])
    monkeypatch.setattr(model, "_static_decoder", None)  # built anew under this "release"
    with caplog.at_level(logging.INFO, logger="vl2cli.model.decode_loop"):
        generations = model.generate(items, instructions, max_new_tokens=4, decode_loop="static")
    assert len(generations) == len(items) and all(g.token_ids for g in generations)
    assert any("early_initialization" in r.getMessage() for r in caplog.records)


def test_no_deprecated_cache_argument_reaches_transformers(monkeypatch):
    """Generation and label scoring pass the cache under the name this transformers release takes:
    no `past_key_values` deprecation warning (5.24 prints one per call, removal announced for 5.40)."""
    import warnings

    name = FIXTURES[0]
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    items, instructions = _case_batch(fixture, [next(iter(fixture.cases()))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.generate(items[:1], instructions[:1], max_new_tokens=3, decode_loop="static")
        model.score_labels_batch(items[:1], instructions[:1], ["cooking", "music"])
    assert not [w for w in caught if "past_key_values" in str(w.message)]
