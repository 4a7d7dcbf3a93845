"""Answers as they are generated: new token ids in, new answer text out, for a terminal to print.

`AnswerStreamer` speaks transformers' streamer protocol (`put(ids)`, `end()`), so the same object
serves transformers' `generate` and vl2's own static-cache loop, which feeds it the same way. It
decodes the whole answer so far with the family's own `decode_answer` at every step and hands on only
what is new, so the pieces joined are the answer the family would decode from all tokens at once
(stripped the same way: leading and trailing spaces come out only once text follows them). Text that
ends in half a character (a multi-byte character split across tokens) is held back until it is whole.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.generation.streamers import BaseStreamer

#: What a tokenizer decodes an incomplete UTF-8 sequence to; such text waits for the next token.
REPLACEMENT_CHARACTER = "\ufffd"


class AnswerStreamer(BaseStreamer):
    """Calls `on_text(piece)` with each new piece of one answer's text (batch size 1 only).

    The first `put` is the prompt (transformers' protocol; an empty tensor when generating from
    embeddings) and is skipped.
    """

    def __init__(self, decode: Callable[[list[int]], str], on_text: Callable[[str], None]) -> None:
        self.decode, self.on_text = decode, on_text
        self.token_ids: list[int] = []
        #: the text handed on so far (a prefix of the answer)
        self.text = ""
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:
            if value.shape[0] != 1:
                raise ValueError("answers stream for one input at a time (batch size 1)")
            value = value[0]
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.token_ids.extend(int(t) for t in value.tolist())
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)

    def _emit(self, *, final: bool) -> None:
        text = self.decode(self.token_ids)
        if not final and text.endswith(REPLACEMENT_CHARACTER):
            return
        if text.startswith(self.text) and len(text) > len(self.text):
            piece, self.text = text[len(self.text):], text
            self.on_text(piece)
