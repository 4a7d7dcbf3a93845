"""Video-LLaMA (v1) prompts: upstream's two conversation templates, its messages, its tokenisation.

Strings are upstream's exactly (`conversation_video.py` and the demos at 64888c0), including the runs of
spaces that backslash line continuations leave inside the audio-visual message, and the two spaces
`Chat.ask` produces when it joins the question to a `</Video>` / `</Image>` message that already ends in
a space. `split_segments` / `SegmentTokenizer` reproduce `get_context_emb`: the prompt is cut at
`<ImageHere>`, each piece is tokenised on its own by the sentencepiece model (the slow LlamaTokenizer
of transformers 4.28: special tokens split out, every other chunk encoded with its dummy prefix and
whitespace kept), and only the first piece gets BOS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import CheckpointError

IMAGE_HERE = "<ImageHere>"
LLAMA2_DEFAULT_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
#: `demo_video.py` sets this system message on image and video uploads (and `demo_audiovideo.py` on images).
VISUAL_SYSTEM = ("You are able to understand the visual content that the user provides. Follow the instructions "
                 "carefully and explain your answers in detail.")
VIDEO_MESSAGE_PREFIX = "<Video><ImageHere></Video> "
IMAGE_MESSAGE = "<Image><ImageHere></Image> "
AUDIO_VIDEO_MESSAGE = (
    "Close your eyes, open your ears and you imagine only based on the sound that: <ImageHere>."
    + " " * 17 + "Close your ears, open your eyes and you see that <Video><ImageHere></Video>."
    + " " * 18 + "Now answer my question based on what you have just seen and heard."
)


@dataclass(frozen=True)
class Template:
    name: str
    default_system: str
    roles: tuple[str, str]
    answer_cut: str  # what `Chat.answer` cuts the decoded text at


TEMPLATES = {
    "llama_v2": Template("llama_v2", LLAMA2_DEFAULT_SYSTEM, ("USER", "ASSISTANT"), "</s>"),
    "vicuna": Template("vicuna", "", ("Human", "Assistant"), "###"),
}


def render(template: Template, system: str, messages: list[tuple[str, str | None]]) -> str:
    """`Conversation.get_prompt()` for the LLAMA_2 and SINGLE separator styles."""
    if template.name == "vicuna":
        out = system + "###"
        for role, message in messages:
            out += f"{role}: {message}###" if message else f"{role}:"
        return out
    out = ""
    for i, (_, message) in enumerate(messages):
        if not message:
            continue
        if i == 0:
            message = f"<<SYS>>\n{system}\n<</SYS>>\n\n" + message
        out += f"<s>[INST] {message} [/INST]" if i % 2 == 0 else f" {message} </s>"
    return out.lstrip("<s>")  # a character-set strip, as upstream's str.lstrip


def user_turn(upload: str | None, question: str) -> str:
    """`Chat.ask` after an upload: joined with one space to a message holding `</Video>` or `</Image>`."""
    if upload is None:
        return question
    if "</Video>" in upload or "</Image>" in upload:
        return " ".join([upload, question])
    return question  # unreachable with upstream's uploads, kept for completeness


def conversation(template: Template, kind: str, question: str, *, video_message: str = "",
                 has_audio_branch: bool = False,
                 earlier: tuple[tuple[str, str], ...] = ()) -> tuple[str, list[tuple[str, str | None]]]:
    """(system, messages) upstream's demo builds for one question about an upload of `kind`.

    `earlier` (question, answer) turns come first, as `Chat.ask` / `Chat.answer` keep them: the upload
    joined to the first question only, each answer as the assistant's message.

    kind: "video" (vision only), "av" (audio + video, `Chat.upload_video`), "image" or "text".
    The video system message is the one of the demo that fits the model: `demo_audiovideo.py` (empty)
    for a model with the audio branch, `demo_video.py` (`VISUAL_SYSTEM`) otherwise.
    """
    user, assistant = template.roles
    if kind == "av":
        system, upload = "", AUDIO_VIDEO_MESSAGE
    elif kind == "video":
        system, upload = ("" if has_audio_branch else VISUAL_SYSTEM), VIDEO_MESSAGE_PREFIX + video_message
    elif kind == "image":
        system, upload = VISUAL_SYSTEM, IMAGE_MESSAGE
    elif kind == "text":
        system, upload = template.default_system, None
    else:
        raise ValueError(f"unknown upload kind {kind!r}")
    turns: list[tuple[str, str | None]] = [*earlier, (question, None)]
    messages: list[tuple[str, str | None]] = []
    for k, (asked, answer) in enumerate(turns):
        messages += [(user, user_turn(upload, asked) if k == 0 else asked), (assistant, answer)]
    return system, messages


def split_segments(prompt: str) -> list[str]:
    return prompt.split(IMAGE_HERE)


class SegmentTokenizer:
    """The LLaMA sentencepiece model, used as transformers 4.28's slow `LlamaTokenizer` used it."""

    SPECIAL = ("<unk>", "<s>", "</s>")

    def __init__(self, model_file: Path) -> None:
        import sentencepiece

        if not model_file.is_file():
            raise CheckpointError(f"{model_file.parent}: no tokenizer.model (the LLaMA sentencepiece model).")
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.Load(str(model_file))
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"{model_file}: not a sentencepiece model: {exc}") from exc
        self.unk_token_id = self.sp.unk_id()
        self.bos_token_id = self.sp.bos_id()
        self.eos_token_id = self.sp.eos_id()
        self.pad_token_id = self.unk_token_id  # upstream: pad = unk
        self._special = {self.sp.id_to_piece(i): i for i in (self.unk_token_id, self.bos_token_id, self.eos_token_id)}
        self._splitter = re.compile("(" + "|".join(re.escape(t) for t in self._special) + ")")

    def encode(self, text: str, *, add_bos: bool) -> list[int]:
        ids = [self.bos_token_id] if add_bos else []
        for chunk in self._splitter.split(text):
            if not chunk:
                continue
            ids.extend([self._special[chunk]] if chunk in self._special else self.sp.encode(chunk))
        return ids

    def segment_ids(self, prompt: str) -> list[list[int]]:
        """Per-segment ids of `get_context_emb`: BOS on the first segment only."""
        return [self.encode(segment, add_bos=i == 0) for i, segment in enumerate(split_segments(prompt))]

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i not in (self.unk_token_id, self.bos_token_id, self.eos_token_id)])
