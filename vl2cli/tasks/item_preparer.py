"""Decoded files into work items: the modality and instruction of each, or the error record's cause."""
from __future__ import annotations

from ..errors import MediaError, NoVideoStreamError, record_error
from ..media.loader import LoadedMedia
from ..output.record import Request
from .feature_reuse import FeatureReuse
from .modality import ModelTowers, choose_modality
from .plan import PlannedFile
from .prompts import caption_instruction, classify_instruction
from .spec import RunOptions, TaskSpec
from .work_item import WorkItem


class ItemPreparer:
    """Turns a decoded file (or its decoding error) into the work items the model call takes."""

    def __init__(self, task: TaskSpec, options: RunOptions, request: Request, towers: ModelTowers,
                 features: FeatureReuse) -> None:
        self.task, self.options, self.request, self.towers = task, options, request, towers
        self.features = features

    def instruction_for(self, modality: str, request: Request | None = None) -> str:
        if self.task.task == "caption":
            return caption_instruction(modality, self.task.prompt)
        if self.task.task == "classify":
            return classify_instruction(modality, self.task.labels or ())
        return (request or self.request).prompt or ""

    def items_for(self, plan: PlannedFile, result: LoadedMedia | MediaError) -> list[WorkItem]:
        """A decoded file's items: one per request still to do for it (they share the decoded media)."""
        requests = plan.requests or (None,)
        if len(requests) > 1:
            self.features.keep_for_questions()
        items = []
        for request in requests:
            item = WorkItem(plan.path, plan.stamp, plan.segment, request=request)
            self.prepare(item, result)
            items.append(item)
        return items

    def prepare(self, item: WorkItem, result: LoadedMedia | MediaError) -> None:
        """Decide the modality and instruction of a decoded file, or mark it failed."""
        if isinstance(result, MediaError):
            item.error = result.as_record_error()
            return
        item.loaded = result
        info = result.info
        has_audio = info.has_audio and not result.audio_missing  # a track that decoded to nothing counts as none
        kind = info.kind
        if result.video_absent:  # a segment after the video track's end: its sound is what there is
            if self.options.modality in ("video", "av") or not self.towers.has_audio or not has_audio:
                item.error = record_error(NoVideoStreamError.code, f"{item.path}: this segment lies after the end "
                                                                   "of the video track: it has no frames to show")
                return
            kind = "audio"
        try:
            item.modality = choose_modality(kind, has_audio_stream=has_audio, requested=self.options.modality,
                                            towers=self.towers, path=str(item.path))
        except MediaError as exc:
            item.modality = None
            item.error = exc.as_record_error()
            return
        item.instruction = self.instruction_for(item.modality, item.request)


__all__ = ["ItemPreparer"]
