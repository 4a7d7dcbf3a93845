"""Default instructions, in one place so captions read the same whichever entry point asked."""
from __future__ import annotations

from collections.abc import Sequence

from ..bounded_files import read_small_file, reason
from ..errors import Vl2Error

#: Upstream's captioning style, by what the model is shown. An AV item is a video with its sound.
DEFAULT_CAPTION_PROMPTS: dict[str, str] = {
    "video": "Describe the video in detail.",
    "av": "Describe the video in detail.",
    "image": "Describe the image in detail.",
    "audio": "Describe the audio in detail.",
}
#: What a file is called in the classify question, by modality.
_SUBJECT_BY_MODALITY = {"video": "video", "av": "video", "image": "image", "audio": "audio"}
CLASSIFY_PROMPT_TEMPLATE = (
    "Which one of these labels best describes the {subject}? Labels: {labels}. Answer with the label only."
)


def caption_instruction(modality: str, prompt: str | None = None) -> str:
    """The user's prompt when given, else upstream's "Describe the ... in detail." for this modality."""
    return prompt if prompt else DEFAULT_CAPTION_PROMPTS[modality]


def classify_instruction(modality: str, labels: Sequence[str]) -> str:
    """One question listing every label; the model's answer is then scored per label."""
    return CLASSIFY_PROMPT_TEMPLATE.format(subject=_SUBJECT_BY_MODALITY[modality], labels=", ".join(labels))


def parse_labels(value: str | Sequence[str]) -> list[str]:
    """Labels from "a,b,c" strings, `@path` entries (one label per line, `#` starts a comment), or lists.

    Blank entries are dropped and duplicates kept once, in first-seen order.
    """
    values = [value] if isinstance(value, str) else list(value)
    items: list[str] = []
    for entry in values:
        if entry.startswith("@"):
            try:
                lines = read_small_file(entry[1:]).decode("utf-8").splitlines()
            except OSError as exc:
                raise Vl2Error(f"labels {entry}: cannot read the labels file ({reason(exc)})") from None
            except UnicodeDecodeError as exc:
                raise Vl2Error(f"labels {entry}: the labels file is not UTF-8 text (byte {exc.start})") from None
            items.extend(line.split("#", 1)[0] for line in lines)
        else:
            items.extend(entry.split(","))
    labels: list[str] = []
    for item in items:
        label = item.strip()
        if label and label not in labels:
            labels.append(label)
    return labels
