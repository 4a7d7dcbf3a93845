"""What a report row shows beside its output (rows.py, no HTML): the question, classify's top-k with
probabilities, notes, a missing audio track, a cut-off answer, and a file:// link that is percent-encoded
from the path's very bytes, whatever the (untrusted) path holds."""
from __future__ import annotations

import os
from urllib.parse import unquote_to_bytes

import pytest

from vl2cli.output.record import Request, build_record
from vl2cli.output.record import is_cut_off
from vl2cli.report.rows import file_url, shown_details, summarise

ASK = Request(task="ask", prompt="What colour is the car?", labels=None, model_id="m", revision=None, frames=4,
              modality="auto")
CLASSIFY = Request(task="classify", prompt=None, labels=["cat", "dog", "bird"], model_id="m", revision=None,
                   frames=4, modality="auto")
CAPTION = Request(task="caption", prompt=None, labels=None, model_id="m", revision=None, frames=4, modality="auto")
SCORES = [{"label": "dog", "probability": 0.7, "log_likelihood": -1.0, "num_tokens": 2},
          {"label": "cat", "probability": 0.2, "log_likelihood": -2.3, "num_tokens": 2},
          {"label": "bird", "probability": 0.1, "log_likelihood": -3.0, "num_tokens": 3}]


@pytest.mark.parametrize(("path", "url"), [
    ("/data/clip.mp4", "file:///data/clip.mp4"),
    ("/data/a b#c?d%e.mp4", "file:///data/a%20b%23c%3Fd%25e.mp4"),
    ('/x/"><img src=x onerror=alert(1)>.mp4', "file:///x/%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.mp4"),
    ("/x/é.mp4", "file:///x/%C3%A9.mp4"),
    (os.fsdecode(b"/x/clip-\xff.mp4"), "file:///x/clip-%FF.mp4"),  # a name that is not UTF-8: its very byte
])
def test_a_file_url_percent_encodes_every_byte_but_the_slashes(path: str, url: str) -> None:
    assert file_url(path) == url
    assert unquote_to_bytes(url.removeprefix("file://")) == os.fsencode(path)


@pytest.mark.parametrize("path", ["clip.mp4", "javascript:alert(1)", "~/clip.mp4", "/a\x00b",
                                  "/x/\ud800.mp4", None, 7])
def test_a_path_that_is_not_an_absolute_file_name_gets_no_link(path: object) -> None:
    assert file_url(path) is None


def test_an_ask_row_shows_its_question_and_a_plain_caption_only_its_link() -> None:
    ask = build_record(ASK, path="/data/car.mp4", stamp=None, vl2_version="t", output="red", modality="video")
    assert shown_details(ask) == {"url": "file:///data/car.mp4", "prompt": "What colour is the car?"}
    caption = build_record(CAPTION, path="/data/car.mp4", stamp=None, vl2_version="t", output="a car")
    assert shown_details(caption) == {"url": "file:///data/car.mp4"}  # no empty keys


def test_a_classify_row_shows_its_top_k_with_their_probabilities_most_likely_first() -> None:
    record = build_record(CLASSIFY, path="/data/pet.mp4", stamp=None, vl2_version="t", output="dog",
                          label_scores=SCORES, top_k=["dog", "cat"], notes=["audio track 2 of 3 heard"],
                          audio_missing=True)
    details = shown_details(record)
    assert [label for label, _ in details["top"]] == ["dog", "cat"]
    assert [p for _, p in details["top"]] == pytest.approx([0.7, 0.2])
    assert details["notes"] == ["audio track 2 of 3 heard"] and details["audio_missing"] is True
    assert "cut_off" not in details


def test_a_cut_off_answer_is_flagged_and_counted_and_older_records_never_are() -> None:
    cut = build_record(CAPTION, path="/data/a.mp4", stamp=None, vl2_version="t", output="A man walks his",
                       generation={"finish_reason": "length", "prompt_tokens": 10, "output_tokens": 4})
    ended = build_record(CAPTION, path="/data/b.mp4", stamp=None, vl2_version="t", output="A man walks.",
                         generation={"finish_reason": "eos", "prompt_tokens": 10, "output_tokens": 4})
    old = {key: value for key, value in ended.items() if key not in ("generation", "runtime")}
    old["schema_version"] = 2
    assert shown_details(cut)["cut_off"] is True and "cut_off" not in shown_details(ended)
    assert [is_cut_off(r) for r in (cut, ended, old)] == [True, False, False]
    assert summarise([cut, ended, old]).cut_off == 1


def test_shown_text_that_is_not_utf8_is_made_printable_but_the_link_keeps_the_bytes() -> None:
    path = os.fsdecode(b"/x/q-\xfe.mp4")
    record = build_record(ASK, path=path, stamp=None, vl2_version="t", output="yes",
                          notes=[os.fsdecode(b"track \xfe")])
    details = shown_details(record)
    assert details["url"] == "file:///x/q-%FE.mp4" and details["notes"] == ["track \\xfe"]
