"""Batched label scoring (`VideoLlama2.score_labels_batch`) against one file at a time.

`test_reference_parity.py::test_label_scores_share_one_prefill_and_match_full_forward` ties the
one-file scores to a plain full forward pass; here a batch of files with different prompt lengths
(left padding) and labels of different token counts must give the same scores, chunked or not.
"""
from __future__ import annotations

import pytest

from reference_fixtures import case_input, case_instructions, fixture_names, load_fixture_model, load_reference

FIXTURES = fixture_names()
#: Different token counts (checked below), one a prefix of none of the others.
LABELS = ["cooking", "sports", "music videos", "a", "a person playing the guitar on a stage"]
#: fp32 on CPU, batched vs one-at-a-time. A log-likelihood is a sum over the label's tokens and reaches
#: -145 here, where one float32 step is 1.5e-5: an absolute 1e-5 failed on one-step noise. Measured on
#: the three fixtures: at most 1.2e-7 relative (one step). 1e-6 relative (a floor of 1e-5 near zero)
#: leaves 8x margin and still fails a masking or padding error, which moves a score by 1e-3 or more.
RTOL, ATOL = 1e-6, 1e-5

pytestmark = pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")


def _single_input_cases(fixture):
    items, instructions = [], []
    for case in fixture.cases().values():
        if len(case.get("images_arg") or [None]) == 1:
            items.append(case_input(fixture, case))
            instructions.append(case_instructions(case)[0])
    return items, instructions


@pytest.mark.parametrize("name", FIXTURES)
def test_batched_scores_equal_one_at_a_time(monkeypatch, name):
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    items, instructions = _single_input_cases(fixture)
    prompt_lengths = {len(model.input_ids(i, s)) for i, s in zip(items, instructions)}
    assert len(prompt_lengths) > 1, "the batch must mix prompt lengths"
    label_lengths = {len(model.tokenizer(label, add_special_tokens=False).input_ids) for label in LABELS}
    assert len(label_lengths) > 1, "the labels must differ in token count"

    alone = [model.score_labels(item, instruction, LABELS) for item, instruction in zip(items, instructions)]
    batched = model.score_labels_batch(items, instructions, LABELS)
    # a budget of a few prompts' positions forces several chunks, some splitting a file's labels
    longest = max(e.shape[0] for e in (model.prepare_inputs([i], [s])[0][0] for i, s in zip(items, instructions)))
    chunked = model.score_labels_batch(items, instructions, LABELS, max_cached_tokens=3 * longest)
    assert len(batched) == len(chunked) == len(items)
    for one, many, split in zip(alone, batched, chunked):
        assert many.labels == split.labels == LABELS
        assert many.num_tokens == split.num_tokens == one.num_tokens
        assert many.log_likelihoods == pytest.approx(one.log_likelihoods, rel=RTOL, abs=ATOL)
        assert split.log_likelihoods == pytest.approx(one.log_likelihoods, rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("name", FIXTURES[:1])
def test_scores_differ_between_files_and_labels(monkeypatch, name):
    """Guards the test above against a degenerate pass (every score alike)."""
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    items, instructions = _single_input_cases(fixture)
    scores = [s.log_likelihoods for s in model.score_labels_batch(items, instructions, LABELS)]
    assert len({round(v, 3) for v in scores[0]}) == len(LABELS)
    assert len({tuple(round(v, 3) for v in row) for row in scores}) == len(items)
