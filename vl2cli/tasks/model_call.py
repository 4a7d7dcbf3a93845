"""A batch of prepared items through the model: `generate` or label scoring, with the retries that keep
one bad file or one batch too large for the GPU from taking its neighbours down."""
from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

import torch

from ..errors import ModelError, record_error
from ..model.inputs import LabelScores
from ..output.record import generation_facts
from .batch_sizing import OomCap
from .feature_reuse import FeatureReuse
from .model_inputs import ModelInputs
from .spec import TaskSpec
from .work_item import WorkItem

log = logging.getLogger(__name__)

MS_PER_S = 1000.0


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether a model call failed for want of device memory (torch's error, or a backend's message)."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class ModelCall:
    """Runs a batch's ready items through the model and writes each one's answer (or error) into it."""

    def __init__(self, model: Any, task: TaskSpec, inputs: ModelInputs, features: FeatureReuse,
                 oom_cap: OomCap) -> None:
        self.model, self.task, self.inputs, self.features, self.oom_cap = model, task, inputs, features, oom_cap

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    def run_batch(self, items: list[WorkItem]) -> None:
        ready = [item for item in items if item.ready]
        if ready:
            self._call(ready, self._classify if self.task.task == "classify" else self._generate)

    def run_guarded(self, ready: list[WorkItem], fn: Callable[[list[WorkItem]], None]) -> None:
        """`fn` over ready items with a batch's error handling, for a caller's own model call (`vl2 chat`)."""
        self._call(ready, fn)

    def _call(self, ready: list[WorkItem], fn: Callable[[list[WorkItem]], None]) -> None:
        """Run `fn` on a batch; out of memory -> halves (and a lower cap); other errors -> one by one."""
        try:
            fn(ready)
        except Exception as exc:  # noqa: BLE001 - one failing batch must not end a nightly run
            if len(ready) > 1 and is_out_of_memory(exc):
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                half = (len(ready) + 1) // 2
                self.oom_cap.lower_to(half)
                log.warning("out of memory with %d files in a batch; retrying as batches of %d", len(ready), half)
                self._call(ready[:half], fn)
                self._call(ready[half:], fn)
            elif len(ready) > 1:
                for item in ready:
                    self._call([item], fn)
            else:
                what = "out of memory" if is_out_of_memory(exc) else f"{type(exc).__name__}: {exc}"
                ready[0].error = record_error(ModelError.code, f"{ready[0].path}: {what}")

    def _generate(self, ready: list[WorkItem]) -> None:
        start = perf_counter()
        inputs = [self.inputs.model_input(item) for item in ready]
        generations = self.model.generate(inputs, [i.instruction for i in ready], max_new_tokens=self.task.max_new_tokens,
                                          **self.generate_options())
        per_item = (perf_counter() - start) * MS_PER_S / len(ready)
        for item, generation in zip(ready, generations):
            item.output, item.model_ms, item.batch_size = generation.text, per_item, len(ready)
            item.generation = generation_facts(generation.finish_reason, generation.prompt_tokens,
                                               generation.output_tokens)

    def generate_options(self) -> dict[str, Any]:
        """`generate` keywords beyond the defaults: the feature cache, sampling (greedy needs none)."""
        options: dict[str, Any] = {}
        if self.features.feature_cache is not None:
            options["feature_cache"] = self.features.feature_cache
        sampling = self.task.sampling
        if sampling is not None:
            options.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed)
        return options

    def _classify(self, ready: list[WorkItem]) -> None:
        start = perf_counter()
        labels = list(self.task.labels or ())
        inputs = [self.inputs.model_input(item) for item in ready]
        all_scores = self.model.score_labels_batch(inputs, [i.instruction for i in ready], labels)
        per_item = (perf_counter() - start) * MS_PER_S / len(ready)
        for item, scores in zip(ready, all_scores):
            self._set_label_scores(item, labels, scores)
            item.model_ms, item.batch_size = per_item, len(ready)

    def _set_label_scores(self, item: WorkItem, labels: list[str], scores: LabelScores) -> None:
        probabilities = scores.probabilities()
        ranked = sorted(range(len(labels)), key=lambda k: (-probabilities[k], k))
        item.label_scores = [{"label": labels[k], "probability": probabilities[k],
                              "log_likelihood": scores.log_likelihoods[k], "num_tokens": scores.num_tokens[k]}
                             for k in ranked]
        item.top_k = [labels[k] for k in ranked[: self.task.top_k]]
        item.output = labels[ranked[0]]
        item.generation = generation_facts(None, scores.prompt_tokens, None)  # labels scored, nothing generated


__all__ = ["ModelCall", "is_out_of_memory"]
