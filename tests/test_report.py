"""`vl2 report`: the summary numbers, the contact sheets (frames re-sampled from the files), and the page
itself in a real headless browser (Debian's chromium driven by playwright): it renders thumbnails and
captions, fetches nothing, and its filter and search work — also over 10 000 records.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from media_helpers.synth import write_scene_video
from vl2cli.media.sampling import sample_frame_indices
from vl2cli.output.record import FileStamp, Request, build_record
from vl2cli.report.contact_sheet import contact_sheet
from vl2cli.report.page import PAGE_SIZE, write_report
from vl2cli.report.rows import latest_records, summarise
from vl2cli.tasks.segmenting import Segmenting

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REQUEST = Request(task="caption", prompt=None, labels=None, model_id="tiny/model", revision=None, frames=8,
                  modality="auto")
CAPTIONS = ["a red room", "a green field", "a pale blue sky", "a purple curtain", "a yellow wall"]


def _have_browser() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return os.access(CHROMIUM, os.X_OK)


needs_browser = pytest.mark.skipif(not _have_browser(), reason="needs Debian's chromium and playwright")


def _record(path: Path, **fields: Any) -> dict[str, Any]:
    stamp = FileStamp.of(path) if path.exists() else None
    timings = {"decode": 120.0, "model": 800.0, "total": 920.0, "batch_size": 4}
    return build_record(REQUEST, path=str(path.absolute()), stamp=stamp, vl2_version="test", timings_ms=timings,
                        **fields)


@pytest.fixture(scope="module")
def run_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run's output over a segmented long video, an image, a broken file and a file deleted since."""
    folder = tmp_path_factory.mktemp("media")
    long_video = write_scene_video(folder / "long.mp4", seconds=200.0, fps=4, scene_seconds=40.0)
    image = folder / "still.png"
    Image.fromarray(np.full((48, 64, 3), (30, 160, 90), dtype=np.uint8)).save(image)
    broken = folder / "broken.mp4"
    broken.write_text("not a video")
    gone = Path(shutil.copy(long_video, folder / "gone.mp4"))
    segmenting = Segmenting.parse("40s")
    records = [_record(long_video, output=text, modality="video", media={"kind": "video", "duration_s": 200.0, "has_video": True, "has_audio": False},
                       segment=segmenting.record_form(segment))
               for text, segment in zip(CAPTIONS, segmenting.cut(str(long_video)))]
    records.append(_record(image, output="a green square", modality="image", media={"kind": "image", "has_video": True, "has_audio": False}))
    records.append(_record(broken, error={"code": "unsupported_media", "message": f"{broken}: not a video file"}))
    records.append(_record(gone, output="a lost file", modality="video", media={"kind": "video", "has_video": True, "has_audio": False}))
    gone.unlink()
    out = folder / "results.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return out


def test_summary_counts_files_segments_and_failures(run_output: Path) -> None:
    rows = latest_records(json.loads(line) for line in run_output.read_text().splitlines())
    summary = summarise(rows)
    assert (summary.records, summary.files, summary.segments) == (8, 4, 5)
    assert (summary.succeeded, summary.failed, summary.failures_by_code) == (7, 1, {"unsupported_media": 1})
    again = rows + [dict(rows[-2], error=None, output="fixed")]  # a later record for the same file wins
    assert len(latest_records(again)) == 8 and latest_records(again)[-2]["output"] == "fixed"


def test_contact_sheets_are_the_frames_the_model_saw(run_output: Path) -> None:
    records = [json.loads(line) for line in run_output.read_text().splitlines()]
    segment = records[2]  # 80 s - 120 s
    sheet = contact_sheet(segment)
    assert sheet.frame_indices == sample_frame_indices(800, 4.0, 8, 80.0, 120.0)
    assert sheet.data_uri.startswith("data:image/jpeg;base64,") and sheet.note is None
    assert contact_sheet(records[5]).frame_indices == [0]  # the image
    assert contact_sheet(records[6]).data_uri is None and "could not be decoded" in contact_sheet(records[6]).note
    assert "no longer at this path" in contact_sheet(records[7]).note


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _open(page: Any, report: Path) -> list[str]:
    """Load the report; returns every URL the page asked for."""
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.goto(report.as_uri())
    page.wait_for_selector("#rows tr")
    return asked


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@needs_browser
def test_the_report_renders_thumbnails_and_captions_and_filters(browser: Any, run_output: Path, tmp_path: Path) -> None:
    report = write_report(run_output, tmp_path / "report.html")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    asked = _open(page, report)
    assert [url for url in asked if not url.startswith(("file:", "data:"))] == []  # nothing from the network
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert page.locator("#rows tr").count() == 8
    thumbnails = page.locator("td.sheet img")
    assert thumbnails.count() == 6  # 5 segments and the image; none for the broken and the deleted file
    for i in range(thumbnails.count()):
        assert thumbnails.nth(i).is_visible()
        assert thumbnails.nth(i).evaluate("img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0")
    for caption in CAPTIONS:
        assert page.get_by_text(caption, exact=True).is_visible()
    assert page.get_by_text("00:01:20.000 – 00:02:00.000 (3/5)").is_visible()
    assert page.get_by_text("no longer at this path", exact=False).is_visible()
    assert "4" in page.locator(".card").first.inner_text()  # files

    page.select_option("#filter", "code:unsupported_media")
    assert page.locator("#rows tr").count() == 1 and page.locator("#rows tr.failed").count() == 1
    assert page.get_by_text("not a video file", exact=False).is_visible()
    page.select_option("#filter", "ok")
    assert page.locator("#rows tr").count() == 7 and page.locator("#rows tr.failed").count() == 0
    page.select_option("#filter", "all")
    page.fill("#search", "PURPLE")
    expect(page.locator("#rows tr")).to_have_count(1)  # the search waits for typing to pause
    assert page.locator("#rows tr .output").inner_text() == "a purple curtain"
    page.fill("#search", "no such words anywhere")
    expect(page.locator("#rows tr")).to_have_count(0)
    assert page.locator("#status").inner_text() == "nothing matches"
    page.close()


@needs_browser
def test_ten_thousand_records_stay_paged(browser: Any, tmp_path: Path) -> None:
    gone = tmp_path / "gone.mp4"  # no file: rows without sheets, the page is what is measured
    lines = []
    for i in range(10_000):
        failed = i % 10 == 3
        record = build_record(REQUEST, path=f"{gone}.{i:05d}.mp4", stamp=None, vl2_version="test",
                              output=None if failed else f"caption number {i}", modality=None if failed else "video",
                              error={"code": "corrupt_media", "message": "damaged"} if failed else None)
        lines.append(json.dumps(record))
    results = tmp_path / "big.jsonl"
    results.write_text("\n".join(lines) + "\n")
    report = write_report(results, tmp_path / "big.html")
    page = browser.new_page()
    _open(page, report)
    assert page.locator("#rows tr").count() == PAGE_SIZE  # one page of rows in the document, not 10 000
    assert page.locator("#page").inner_text() == f"page 1 of {10_000 // PAGE_SIZE}"
    page.click("#next")
    assert page.locator("#rows tr").first.get_attribute("data-index") == str(PAGE_SIZE)
    page.select_option("#filter", "failed")
    assert page.locator("#status").inner_text() == f"showing 1–{PAGE_SIZE} of 1000 matching"
    page.fill("#search", "caption number 9999")
    page.select_option("#filter", "all")
    expect(page.locator("#rows tr")).to_have_count(1)
    assert page.locator("#rows tr .output").inner_text() == "caption number 9999"
    page.close()


def test_report_command_writes_the_page(run_output: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "vl2cli.cli", "report", str(run_output), "--out", str(out),
                          "--max-sheets", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    html = out.read_text()
    assert html.count("data:image/jpeg;base64,") == 2 and "only the first 2 rows get one" in html
    missing = subprocess.run([sys.executable, "-m", "vl2cli.cli", "report", str(tmp_path / "nope.jsonl")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_lines_that_are_not_records_are_said_and_a_file_of_none_is_refused(run_output: Path, tmp_path: Path) -> None:
    from vl2cli.errors import Vl2Error
    from vl2cli.report.page import build_report

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(run_output.read_text() + "this line is not JSON\n" + '{"note": "a foreign object"}\n')
    warnings: list[str] = []
    build_report(mixed, max_sheets=0, on_warning=warnings.append)
    assert len(warnings) == 1 and "skipped 2 line(s) that are not vl2 records" in warnings[0], warnings
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('not json\n{"note": "x"}\n')
    with pytest.raises(Vl2Error, match="no vl2 records in it"):
        build_report(foreign, max_sheets=0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "vl2 report" in build_report(empty, max_sheets=0)  # a run that found nothing: an empty report


def _report_data(html: str) -> dict[str, Any]:
    start = html.index('<script type="application/json" id="data">') + len('<script type="application/json" id="data">')
    return json.loads(html[start:html.index("</script>", start)])


def _many_records(tmp_path: Path, count: int) -> Path:
    """`count` units of work (no media behind them), every 7th a failure, the first one recorded twice."""
    gone = tmp_path / "gone.mp4"
    lines = []
    for i in range(count):
        failed = i % 7 == 3
        record = build_record(REQUEST, path=f"{gone}.{i:06d}.mp4", stamp=None, vl2_version="test",
                              output=None if failed else f"caption number {i}", modality=None if failed else "video",
                              error={"code": "corrupt_media", "message": f"damaged {i}"} if failed else None)
        lines.append(json.dumps(record))
    lines.insert(5, lines[0].replace("caption number 0", "the latest caption"))  # a later record of unit 0
    results = tmp_path / "many.jsonl"
    results.write_text("\n".join(lines) + "\n")
    return results


def test_a_large_report_is_files_the_first_page_linking_the_rest(tmp_path: Path) -> None:
    from vl2cli.report.page import FILE_ROW_BYTES, LISTED_FAILURES, ROWS_PER_FILE

    count = 2 * ROWS_PER_FILE + 2_345
    report = write_report(_many_records(tmp_path, count), tmp_path / "big.html", max_sheets=0)
    first = _report_data(report.read_text())
    assert report.stat().st_size < FILE_ROW_BYTES + 256 * 1024  # the first page is bounded, whatever the run's size
    assert first["summary"]["records"] == count and first["summary"]["failed"] == len(range(3, count, 7))
    assert [file["href"] for file in first["files"]] == ["big.html", "big-2.html", "big-3.html"]
    assert len(first["failures"]) == LISTED_FAILURES and first["failures"][0]["path"].endswith(".000003.mp4")
    seen = list(first["rows"])
    for number, file in enumerate(first["files"][1:], start=2):
        data = _report_data((tmp_path / file["href"]).read_text())
        assert data["file"]["number"] == number and data["file"]["home"] == "big.html" and data["summary"] is None
        assert data["file"]["next"] == (f"big-{number + 1}.html" if number < 3 else None)
        assert [row["i"] for row in data["rows"]] == list(range(file["first"], file["last"] + 1))
        seen += data["rows"]
    assert [row["i"] for row in seen] == list(range(count))  # every row once, in order
    assert seen[0]["output"] == "the latest caption"  # the latest record of a unit of work, at its first place
    assert [row["path"] for row in seen] == [f"{tmp_path / 'gone.mp4'}.{i:06d}.mp4" for i in range(count)]


@needs_browser
def test_the_files_of_a_large_report_link_to_each_other(browser: Any, tmp_path: Path) -> None:
    from vl2cli.report.page import ROWS_PER_FILE

    report = write_report(_many_records(tmp_path, ROWS_PER_FILE + 50), tmp_path / "big.html", max_sheets=0)
    page = browser.new_page()
    _open(page, report)
    assert "failures (the first" in page.locator("#failures").inner_text()
    page.click(f"#files a:has-text('{ROWS_PER_FILE + 1}–{ROWS_PER_FILE + 50}')")
    page.wait_for_selector("#rows tr")
    assert page.url.endswith("big-2.html")
    assert page.locator("#rows tr").count() == 50
    assert page.locator("#rows tr").first.get_attribute("data-index") == str(ROWS_PER_FILE)
    page.fill("#search", f"caption number {ROWS_PER_FILE + 49}")
    expect(page.locator("#rows tr")).to_have_count(1)
    page.click("#files a:has-text('first page')")
    page.wait_for_selector("#rows tr")
    assert page.url.endswith("big.html") and page.locator("#rows tr").count() == PAGE_SIZE
    page.close()


ASK = Request(task="ask", prompt="What colour is the car?", labels=None, model_id="tiny/model", revision=None,
              frames=8, modality="auto")
CLASSIFY = Request(task="classify", prompt=None, labels=["cat", "dog", "bird"], model_id="tiny/model",
                   revision=None, frames=8, modality="av")
SCORES = [{"label": "dog", "probability": 0.7, "log_likelihood": -1.0, "num_tokens": 2},
          {"label": "cat", "probability": 0.2, "log_likelihood": -2.3, "num_tokens": 2},
          {"label": "bird", "probability": 0.1, "log_likelihood": -3.0, "num_tokens": 3}]
SILENCE_NOTE = "no audio track: 30 s of silence stood in"


@needs_browser
def test_a_row_shows_its_question_top_k_notes_and_links_its_file(browser: Any, tmp_path: Path) -> None:
    folder = tmp_path / "odd #1 100%"
    folder.mkdir()
    video = write_scene_video(folder / "car park.mp4", seconds=2.0, fps=4, scene_seconds=1.0)
    media = {"kind": "video", "has_video": True, "has_audio": False}
    common = {"path": str(video), "stamp": FileStamp.of(video), "vl2_version": "test", "media": media}
    records = [
        build_record(ASK, output="red", modality="video", **common),
        build_record(CLASSIFY, output="dog", modality="av", label_scores=SCORES, top_k=["dog", "cat"],
                     audio_missing=True, notes=[SILENCE_NOTE], **common),
        build_record(REQUEST, output="A car parks beside the", modality="video",
                     generation={"finish_reason": "length", "prompt_tokens": 100, "output_tokens": 5}, **common),
    ]
    results = tmp_path / "mixed.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _open(page, write_report(results, tmp_path / "report.html"))
    ask, classify, cut = (page.locator("#rows tr").nth(i) for i in range(3))
    assert ask.locator(".question").inner_text() == "question: What colour is the car?"
    assert ask.locator(".output").inner_text() == "red"
    assert classify.locator("ol.top li").all_inner_texts() == ["dog 0.700", "cat 0.200"]
    assert classify.locator("ul.notes li").all_inner_texts() == [SILENCE_NOTE]
    assert classify.locator(".flag.audio").is_visible() and classify.locator(".flag.cut").count() == 0
    assert cut.locator(".flag.cut").is_visible() and cut.locator(".question").count() == 0
    assert page.locator(".card.bad", has_text="cut off").inner_text().startswith("1")
    href = ask.locator("td.file a.media").get_attribute("href")
    assert href == tmp_path.as_uri() + "/odd%20%231%20100%25/car%20park.mp4"  # pathlib's own encoding agrees
    assert Path(unquote(href.removeprefix("file://"))) == video
    page.select_option("#filter", "cut")
    assert page.locator("#rows tr").count() == 1 and page.locator("#rows tr .flag.cut").count() == 1
    page.select_option("#filter", "all")
    page.fill("#search", "what colour")
    expect(page.locator("#rows tr")).to_have_count(1)  # the question is searched too
    page.close()


@needs_browser
def test_a_hostile_path_and_question_are_text_and_the_link_stays_a_file_url(browser: Any, tmp_path: Path) -> None:
    hostile = tmp_path / '"><img src=x onerror="window.pwned=1">.mp4'
    hostile.write_bytes(b"x")
    question = Request(task="ask", prompt='<script>window.pwned=2</script>', labels=None, model_id="tiny/model",
                       revision=None, frames=8, modality="auto")
    records = [build_record(question, path=str(hostile), stamp=FileStamp.of(hostile), vl2_version="test",
                            output="<b>bold</b>", modality="video", notes=['<img src=x onerror="window.pwned=3">']),
               build_record(question, path="javascript:window.pwned=4", stamp=None, vl2_version="test",
                            error={"code": "unreadable_file", "message": "no such file"})]
    results = tmp_path / "hostile.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records))
    page = browser.new_page()
    _open(page, write_report(results, tmp_path / "report.html"))
    assert page.evaluate("window.pwned") is None
    assert page.locator("td.file img, td.out img, td.out b:has-text('bold'), script[src]").count() == 0
    first, second = page.locator("#rows tr").nth(0), page.locator("#rows tr").nth(1)
    assert first.locator(".question").inner_text() == "question: <script>window.pwned=2</script>"
    assert first.locator(".output").inner_text() == "<b>bold</b>"
    href = first.locator("a.media").get_attribute("href")
    assert href == tmp_path.as_uri() + "/%22%3E%3Cimg%20src%3Dx%20onerror%3D%22window.pwned%3D1%22%3E.mp4"
    assert second.locator("a").count() == 0  # a path that is not absolute: no link, least of all javascript:
    page.close()
