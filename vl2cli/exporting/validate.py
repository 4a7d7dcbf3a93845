"""The parity gate: an exported component is kept only if it reproduces PyTorch on fixed inputs.

Both figures are measured against the fp32 PyTorch module over every validation batch:
* cosine similarity of the flattened outputs (float64), which catches wrong structure;
* max |Δ|, allowed to grow with the output's scale: `max_abs_relative * max(1, max|reference|)`,
  because a ViT's hidden states reach magnitudes in the hundreds where an absolute bound means
  nothing.

Thresholds per precision (fp32 graphs differ only by kernel rounding; fp16/bf16 lose mantissa bits,
bf16 more so): fp32 cosine >= 0.99999 and relative max |Δ| <= 1e-4; fp16 >= 0.999 and 2e-2
(the community gate for fp16 vision engines, see docs/export.md); bf16 >= 0.995 and 6e-2.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class ParityThreshold:
    min_cosine: float
    max_abs_relative: float


FP32_THRESHOLD = ParityThreshold(min_cosine=0.99999, max_abs_relative=1e-4)
FP16_THRESHOLD = ParityThreshold(min_cosine=0.999, max_abs_relative=2e-2)
BF16_THRESHOLD = ParityThreshold(min_cosine=0.995, max_abs_relative=6e-2)
THRESHOLDS = {"fp32": FP32_THRESHOLD, "fp16": FP16_THRESHOLD, "bf16": BF16_THRESHOLD}
#: Batch sizes every component is validated at (1 alone hides batch-axis bugs).
VALIDATION_BATCH_SIZES = (1, 2, 3)


@dataclass(frozen=True)
class ParityResult:
    """Worst figures over all validation batches, and whether they pass the precision's gate."""

    precision: str
    batch_sizes: tuple[int, ...]
    max_abs: float
    cosine: float
    reference_scale: float
    threshold: ParityThreshold

    @property
    def allowed_max_abs(self) -> float:
        return self.threshold.max_abs_relative * max(1.0, self.reference_scale)

    @property
    def passed(self) -> bool:
        return self.cosine >= self.threshold.min_cosine and self.max_abs <= self.allowed_max_abs

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{verdict}: cosine {self.cosine:.6f} (>= {self.threshold.min_cosine}), max |Δ| {self.max_abs:.3g} "
            f"(<= {self.allowed_max_abs:.3g}) at batch sizes {list(self.batch_sizes)}, {self.precision}"
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        data["passed"] = self.passed
        return data


def compare(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    """(max |Δ|, cosine) of two outputs of the same shape, computed in float64 on the CPU."""
    if tuple(reference.shape) != tuple(candidate.shape):
        raise ValueError(f"output shape {tuple(candidate.shape)} != reference {tuple(reference.shape)}")
    ref = reference.detach().to("cpu", torch.float64).flatten()
    out = candidate.detach().to("cpu", torch.float64).flatten()
    max_abs = (ref - out).abs().max().item() if ref.numel() else 0.0
    if not torch.isfinite(out).all():
        return float("inf"), float("-inf")
    cosine = torch.nn.functional.cosine_similarity(ref, out, dim=0, eps=1e-30).item()
    return max_abs, cosine


def check_parity(
    reference: Callable[[torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor], torch.Tensor],
    inputs: Sequence[torch.Tensor],
    precision: str,
) -> ParityResult:
    """Run both on every input batch; keep the worst max |Δ| and cosine."""
    threshold = THRESHOLDS[precision]
    worst_abs, worst_cos, scale = 0.0, 1.0, 0.0
    for batch in inputs:
        with torch.inference_mode():
            expected = reference(batch)
        got = candidate(batch)
        max_abs, cosine = compare(expected, got)
        worst_abs, worst_cos = max(worst_abs, max_abs), min(worst_cos, cosine)
        scale = max(scale, expected.detach().abs().max().item())
    return ParityResult(precision, tuple(int(b.shape[0]) for b in inputs), worst_abs, worst_cos, scale, threshold)
