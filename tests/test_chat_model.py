"""What `vl2 chat` asks of the model layer: prompts with earlier turns, and answers streamed as generated.

The two-turn prompt is checked against the fixture tokenizers' own chat templates fed the message list
upstream's `mm_infer` builds (the media token once, on the first user message; the Mistral types'
system message first), then tokenised as upstream's `tokenizer_multimodal_token` does: the text split
at the media token, each chunk tokenised without special tokens, the placeholder id between them.
Streaming runs on the real fixture model through both decoders.
"""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from reference_fixtures import case_input, fixture_names, load_fixture_model, load_reference
from vl2cli.constants import LLAMA2_DEFAULT_SYSTEM_PROMPT, MODAL_TOKEN_TO_INDEX, VIDEO_TOKEN
from vl2cli.model.inputs import Conversation
from vl2cli.model.prompt import build_prompt, tokenize_with_placeholders
from vl2cli.model.streaming import AnswerStreamer
from vl2cli.model.videollama.prompt import TEMPLATES, conversation, render

FIXTURES = fixture_names()
pytestmark = pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")
FIRST, ANSWER, SECOND = "What is shown?", "A red square on grey.", "And what moves?"
#: Enough new tokens for the random-weight fixtures to produce several words (and a multi-byte piece).
STREAM_TOKENS = 24


def _upstream_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """`mm_infer`'s ids for a message list: chat template, then split at `<video>` and tokenised."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    before, after = prompt.split(VIDEO_TOKEN)
    return (tokenizer(before, add_special_tokens=False).input_ids + [MODAL_TOKEN_TO_INDEX[VIDEO_TOKEN]]
            + tokenizer(after, add_special_tokens=False).input_ids)


@pytest.mark.parametrize("name", FIXTURES)
def test_a_second_turn_has_upstreams_token_ids(name: str) -> None:
    fixture = load_reference(name)
    tokenizer = AutoTokenizer.from_pretrained(str(fixture.checkpoint))
    model_type = json.loads((fixture.checkpoint / "config.json").read_text())["model_type"]
    messages = [{"role": "user", "content": f"{VIDEO_TOKEN}\n{FIRST}"}, {"role": "assistant", "content": ANSWER},
                {"role": "user", "content": SECOND}]
    if model_type != "videollama2_qwen2":
        messages.insert(0, {"role": "system", "content": f"<<SYS>>\n{LLAMA2_DEFAULT_SYSTEM_PROMPT}\n<</SYS>>"})
    prompt = build_prompt(tokenizer, model_type, "video", Conversation(((FIRST, ANSWER),), SECOND))
    ids = tokenize_with_placeholders(tokenizer, prompt, "video")
    assert ids == _upstream_ids(tokenizer, messages)
    assert ids.count(MODAL_TOKEN_TO_INDEX[VIDEO_TOKEN]) == 1
    # no earlier turns: exactly the one-question prompt the batch path builds
    assert build_prompt(tokenizer, model_type, "video", Conversation((), FIRST)) == build_prompt(
        tokenizer, model_type, "video", FIRST)


def test_video_llama_v1_keeps_earlier_turns_as_its_demo_does() -> None:
    system, messages = conversation(TEMPLATES["llama_v2"], "image", SECOND, earlier=((FIRST, ANSWER),))
    prompt = render(TEMPLATES["llama_v2"], system, messages)
    assert prompt.count("<ImageHere>") == 1
    alone = render(TEMPLATES["llama_v2"], *conversation(TEMPLATES["llama_v2"], "image", FIRST))
    assert prompt == f"{alone} {ANSWER} </s><s>[INST] {SECOND} [/INST]"  # Conversation.get_prompt's LLAMA_2 style


def _video_case(name: str):
    fixture = load_reference(name)
    case_name = next(c for c in ("video", "av") if c in fixture.cases())
    return case_input(fixture, fixture.cases()[case_name])


@pytest.mark.parametrize("decode_loop", ["static", "dynamic"])
def test_streamed_pieces_join_to_the_answer_and_change_nothing(monkeypatch: pytest.MonkeyPatch, decode_loop: str) -> None:
    name = FIXTURES[0]
    model = load_fixture_model(monkeypatch, name)
    item = _video_case(name)
    plain = model.generate([item], [FIRST], max_new_tokens=STREAM_TOKENS, decode_loop=decode_loop)[0]
    pieces: list[str] = []
    streamed = model.generate([item], [FIRST], max_new_tokens=STREAM_TOKENS, decode_loop=decode_loop,
                              on_text=pieces.append)[0]
    assert streamed == plain
    assert len(pieces) > 1 and "".join(pieces) == plain.text


def test_a_conversation_changes_the_answer_only_through_its_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    name = FIXTURES[0]
    model = load_fixture_model(monkeypatch, name)
    item = _video_case(name)
    second = Conversation(((FIRST, ANSWER),), SECOND)
    assert model.prompt(item, second) != model.prompt(item, SECOND)
    embeds, _ = model.prepare_inputs([item], [second])
    assert embeds.shape[1] == len(model.input_ids(item, second)) - 1 + model.encode([item])[0].shape[0]


def test_streaming_a_batch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    name = FIXTURES[0]
    model = load_fixture_model(monkeypatch, name)
    item = _video_case(name)
    with pytest.raises(ValueError, match="one input"):
        model.generate([item, item], [FIRST, FIRST], max_new_tokens=2, on_text=print)


def test_the_streamer_holds_back_half_characters_and_outer_spaces() -> None:
    pieces: list[str] = []
    table = {1: " ", 2: "caf", 3: "\ufffd", 4: "é", 5: " ", 6: "ok"}

    def decode(ids: list[int]) -> str:  # like decode_answer: the bytes of 3 + 4 make one character
        text = "".join(table[i] for i in ids).replace("\ufffdé", "é")
        return text.strip()

    streamer = AnswerStreamer(decode, pieces.append)
    streamer.put(torch.empty(1, 0, dtype=torch.long))  # the prompt: skipped
    for token in (1, 2, 3, 4, 5, 6):
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert pieces == ["caf", "é", " ok"]
    assert "".join(pieces) == decode([1, 2, 3, 4, 5, 6])
