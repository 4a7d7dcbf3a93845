"""How many files go to the model at once: the run's starting batch size, and the out-of-memory cap
(the largest batch known to fit) that later batches stay under once one ran out of memory."""
from __future__ import annotations

import logging
from typing import Any

import torch

from ..constants import AUDIO_FBANK_FRAMES, FBANK_NUM_MEL_BINS
from ..settings import CPU_BATCH_SIZE, GPU_MAX_BATCH_SIZE
from .budget import LlmShape, batch_size_for_memory, bytes_per_item
from .media_specs import RunMediaSpec
from .spec import RunOptions, TaskSpec

log = logging.getLogger(__name__)

#: Tokens of a prompt besides its media (system prompt, instruction, chat markup), for memory planning.
PROMPT_TEXT_TOKENS = 256


class OomCap:
    """The largest batch known to fit, once one ran out of memory (None: none has)."""

    def __init__(self) -> None:
        self.batch_cap: int | None = None

    def lower_to(self, size: int) -> None:
        """A batch larger than `size` ran out of memory: no later batch goes above it."""
        self.batch_cap = size if self.batch_cap is None else min(self.batch_cap, size)

    def limit(self, batch_size: int) -> int:
        """`batch_size`, or less where a larger batch ran out of memory."""
        return min(batch_size, self.batch_cap or batch_size)


class BatchSizer:
    """The batch size a run starts with: the options' own, else what the device holds (see `budget`)."""

    def __init__(self, model: Any, task: TaskSpec, options: RunOptions, media_spec: RunMediaSpec) -> None:
        self.model, self.task, self.options, self.media_spec = model, task, options, media_spec

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    def batch_size(self) -> int:
        """--batch-size, else 1 on CPU, else what the GPU's free memory holds (see `budget`)."""
        if self.options.batch_size is not None:
            return self.options.batch_size
        if self.device.type != "cuda":
            return CPU_BATCH_SIZE
        free_bytes, _ = torch.cuda.mem_get_info(self.device)
        shape = LlmShape.of(self.model.llm.config, dtype_bytes=torch.finfo(self.model.dtype).bits // 8)
        item = bytes_per_item(shape, prompt_tokens=self.media_tokens() + PROMPT_TEXT_TOKENS,
                              new_tokens=self.task.max_new_tokens if self.task.task != "classify" else 0)
        chosen = batch_size_for_memory(free_bytes=free_bytes, item_bytes=item, cap=GPU_MAX_BATCH_SIZE)
        log.info("batch size %d (%.1f GiB free on the GPU, ≈%.0f MiB per file)", chosen, free_bytes / 2**30, item / 2**20)
        return chosen

    def media_tokens(self) -> int:
        """Feature tokens of the largest input this run can see: blank features through the eager
        connector and a blank fbank through BEATs (never the compiled encoders, whose first call would
        then fix their shapes to a batch of one)."""
        if hasattr(self.model, "media_tokens"):  # a family that knows its own (Video-LLaMA v1)
            return int(self.model.media_tokens())
        spec = self.media_spec.get()
        encoders = self.model.torch_encoders
        device, dtype = self.device, self.model.dtype
        tokens = 0
        with torch.inference_mode():
            if spec.image is not None:
                tower = encoders.vision_tower
                features = torch.zeros(1, self.model.num_frames, tower.num_patches, tower.hidden_size,
                                       device=device, dtype=dtype)
                if encoders.pool_frames:
                    features = features.mean(dim=1)
                tokens += encoders.connector(features).shape[1]
            if spec.want_audio:
                fbank = torch.zeros(1, AUDIO_FBANK_FRAMES, FBANK_NUM_MEL_BINS, device=device, dtype=dtype)
                tokens += encoders.audio_tower(fbank).shape[1]
        return tokens


__all__ = ["PROMPT_TEXT_TOKENS", "BatchSizer", "OomCap"]
