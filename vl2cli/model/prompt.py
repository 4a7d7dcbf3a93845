"""Prompt assembly and tokenisation with placeholder ids, as upstream `mm_infer` does it.

The prompt text comes from the checkpoint's own chat template; the modal token (`<video>`, ...) is then
cut out and replaced by a negative placeholder id, each text chunk tokenised without special tokens
(any BOS comes from the template text itself). A question after earlier turns (`Conversation`) becomes
upstream's message list: the earlier questions and answers as user/assistant messages, the modal token
once, in the first user message.
"""
from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from ..constants import (
    LLAMA2_DEFAULT_SYSTEM_PROMPT,
    MODAL_TO_TOKEN,
    MODAL_TOKEN_TO_INDEX,
    SYSTEM_MESSAGE_MODEL_TYPES,
)
from .inputs import Conversation, Instruction, Modality

#: The placeholder an input of each modality uses; audio-visual input goes in place of one `<video>`.
PLACEHOLDER_MODAL: dict[Modality, str] = {"video": "video", "av": "video", "image": "image", "audio": "audio", "text": "text"}


def system_message(model_type: str) -> str | None:
    """Upstream prepends Llama-2's default system prompt, in <<SYS>> markers, for Mistral/Mixtral only."""
    if model_type in SYSTEM_MESSAGE_MODEL_TYPES:
        return f"<<SYS>>\n{LLAMA2_DEFAULT_SYSTEM_PROMPT}\n<</SYS>>"
    return None


def user_content(modality: Modality, instruction: str) -> str:
    """`<modal token>\\n<instruction>`; text-only prompts keep the leading newline as upstream."""
    return MODAL_TO_TOKEN[PLACEHOLDER_MODAL[modality]] + "\n" + instruction


def chat_messages(model_type: str, modality: Modality, instruction: Instruction) -> list[dict[str, str]]:
    """The message list upstream's `mm_infer` gives the chat template (system message first, if any)."""
    messages = []
    system = system_message(model_type)
    if system is not None:
        messages.append({"role": "system", "content": system})
    if isinstance(instruction, Conversation):
        turns: list[tuple[str, str | None]] = [*instruction.earlier, (instruction.question, None)]
    else:
        turns = [(instruction, None)]
    for k, (question, answer) in enumerate(turns):
        messages.append({"role": "user", "content": user_content(modality, question) if k == 0 else question})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return messages


def build_prompt(tokenizer: PreTrainedTokenizerBase, model_type: str, modality: Modality, instruction: Instruction) -> str:
    messages = chat_messages(model_type, modality, instruction)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize_with_placeholders(tokenizer: PreTrainedTokenizerBase, prompt: str, modality: Modality) -> list[int]:
    """Token ids of `prompt` with the modal token replaced by its negative placeholder id."""
    token = MODAL_TO_TOKEN[PLACEHOLDER_MODAL[modality]]
    if not token:
        return tokenizer(prompt, add_special_tokens=False).input_ids
    chunks = prompt.split(token)
    ids: list[int] = []
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(MODAL_TOKEN_TO_INDEX[token])
        if chunk:
            ids.extend(tokenizer(chunk, add_special_tokens=False).input_ids)
    return ids
