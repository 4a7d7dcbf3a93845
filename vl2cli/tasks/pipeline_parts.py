"""The parts one run (or one chat question) is made of, built together so they share what they must:
the media spec, the feature cache and the out-of-memory cap."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model.feature_cache import FeatureCache
from ..output.record import Request
from .batch_sizing import BatchSizer, OomCap
from .feature_reuse import FeatureReuse
from .item_preparer import ItemPreparer
from .media_specs import RunMediaSpec
from .model_call import ModelCall
from .model_inputs import ModelInputs
from .plan import towers_of
from .record_builder import RecordBuilder
from .spec import RunOptions, TaskSpec


@dataclass(frozen=True)
class PipelineParts:
    """What every file of a run shares, one part per job (see each part's module)."""

    media_spec: RunMediaSpec
    features: FeatureReuse
    preparer: ItemPreparer
    inputs: ModelInputs
    sizer: BatchSizer
    oom_cap: OomCap
    model_call: ModelCall
    records: RecordBuilder


def pipeline_parts(model: Any, task: TaskSpec, options: RunOptions, request: Request, *,
                   feature_cache: FeatureCache | None = None) -> PipelineParts:
    """The parts for `model` and this run; `feature_cache` keeps encoded media from the start (`vl2 chat`)."""
    towers = towers_of(model)
    media_spec = RunMediaSpec(model, options, towers)
    features = FeatureReuse(request, feature_cache)
    inputs = ModelInputs(model, media_spec, features)
    oom_cap = OomCap()
    return PipelineParts(
        media_spec=media_spec, features=features,
        preparer=ItemPreparer(task, options, request, towers, features),
        inputs=inputs, sizer=BatchSizer(model, task, options, media_spec), oom_cap=oom_cap,
        model_call=ModelCall(model, task, inputs, features, oom_cap),
        records=RecordBuilder(request, model=model, video_backend=options.video_backend),
    )


__all__ = ["PipelineParts", "pipeline_parts"]
