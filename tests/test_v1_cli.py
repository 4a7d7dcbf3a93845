"""Video-LLaMA (v1) through the same library path and CLI as VideoLLaMA 2: `load_model` picks the family,
`ask`/`caption` decode the raw media with v1's own preprocessing (audio included) and give upstream's
greedy answers; records name the family and validate against the schema."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import jsonschema
import pytest

from reference_v1_fixtures import case_kind, case_question, fixture_heads, load_v1_fixture, v1_fixture_names
from vl2cli import api
from vl2cli.output import load_schema

FIXTURES = v1_fixture_names()
pytestmark = pytest.mark.skipif(not FIXTURES, reason="no Video-LLaMA v1 reference fixtures found")


def remux_with_audio(video: Path, wav: Path, out: Path) -> Path:
    """The fixture video's packets (frames unchanged) plus the WAV as lossless PCM, in one .mov file."""
    with av.open(str(video)) as vin, av.open(str(wav)) as ain, av.open(str(out), "w", format="mov") as mux:
        video_in = vin.streams.video[0]
        video_out = mux.add_stream_from_template(video_in)
        audio_in = ain.streams.audio[0]
        audio_out = mux.add_stream("pcm_s16le", rate=audio_in.rate, layout=audio_in.layout.name)
        for packet in vin.demux(video_in):
            if packet.dts is not None:
                packet.stream = video_out
                mux.mux(packet)
        for frame in ain.decode(audio_in):
            frame.pts = None
            mux.mux(audio_out.encode(frame))
        mux.mux(audio_out.encode(None))
    return out


def raw_media_cases(name: str, tmp_path: Path) -> list[tuple[str, Path, dict]]:
    """(case, media file, golden) for single-turn cases whose visual input came from the raw video."""
    fixture = load_v1_fixture(name)
    out = []
    for case_name, case in fixture.cases().items():
        if "preprocess.video_pixels" not in (case["images_arg"] or "") or case_question(case) is None:
            continue
        video = fixture.root / fixture.golden["preprocess"]["video"]["file"]
        if case_kind(case) == "av":
            wav = fixture.root / fixture.golden["preprocess"]["audio"]["file"].split(" ")[0]
            video = remux_with_audio(video, wav, tmp_path / f"{case_name}.mov")
        out.append((case_name, video, case))
    return out


def _use_fixture(monkeypatch, name: str) -> None:
    fixture = load_v1_fixture(name)
    eva, audio = fixture_heads(name)
    monkeypatch.setenv("HF_HUB_CACHE", str(fixture.root / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VL2_V1_EVA_HEADS", str(eva))
    if audio:
        monkeypatch.setenv("VL2_V1_IMAGEBIND_HEADS", str(audio))


@pytest.mark.parametrize("name", FIXTURES)
def test_library_answers_from_raw_media_equal_upstream(monkeypatch, tmp_path, name):
    fixture = load_v1_fixture(name)
    _use_fixture(monkeypatch, name)
    cases = raw_media_cases(name, tmp_path)
    if not cases:
        pytest.skip("no single-turn case fed from the raw video")
    model = api.load_model(str(fixture.checkpoint_folder), device="cpu", dtype="fp32")
    assert model.family == "videollama"
    validator = jsonschema.Draft202012Validator(load_schema())
    for case_name, media, golden in cases:
        [record] = api.ask(model, str(media), case_question(golden), max_new_tokens=len(golden["generated_ids"]))
        validator.validate(record)
        assert record["error"] is None, record["error"]
        assert record["model"]["family"] == "videollama"
        assert record["modality"] == case_kind(golden)
        assert record["audio_missing"] is False
        assert record["output"] == golden["answer_text"], case_name


def _vl2(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("vl2")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vl2cli.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_caption_a_folder_with_a_v1_model(tmp_path):
    """`vl2 caption ./videos --model <v1 folder>`: one record per file, the family named, sound used."""
    name = next((n for n in FIXTURES if load_v1_fixture(n).has_audio), FIXTURES[0])
    fixture = load_v1_fixture(name)
    videos = tmp_path / "videos"
    videos.mkdir()
    video = fixture.root / fixture.golden["preprocess"]["video"]["file"]
    (videos / "silent.mp4").write_bytes(video.read_bytes())
    if fixture.has_audio:
        remux_with_audio(video, fixture.root / "media" / "raw_audio.wav", videos / "with_sound.mov")
    eva, audio = fixture_heads(name)
    env = dict(os.environ)  # conftest.py left only the isolated VL2_* folders (and fixture locations)
    env.update(HF_HUB_CACHE=str(fixture.root / "hub"), HF_HUB_OFFLINE="1", VL2_V1_EVA_HEADS=str(eva),
               VL2_HOME=str(tmp_path / "home"), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    if audio:
        env["VL2_V1_IMAGEBIND_HEADS"] = str(audio)
    out = tmp_path / "captions.jsonl"
    run = _vl2("caption", str(videos), "--model", str(fixture.checkpoint_folder), "--max-new-tokens", "4",
               "--out", str(out), "--device", "cpu", env=env)
    assert run.returncode == 0, run.stderr
    records = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == {p.name for p in videos.iterdir()}
    for record in records.values():
        assert record["error"] is None and record["output"] is not None
        assert record["model"]["family"] == "videollama"
    assert records["silent.mp4"]["modality"] == "video"
    if fixture.has_audio:  # upstream's silent fallback to the frames, said in the record
        assert records["silent.mp4"]["audio_missing"] is False
        assert any("no audio track" in note for note in records["silent.mp4"]["notes"])
    if fixture.has_audio:
        assert records["with_sound.mov"]["modality"] == "av" and records["with_sound.mov"]["audio_missing"] is False


def test_hub_id_resolves_through_the_cache_offline(monkeypatch, tmp_path):
    """`--model DAMO-NLP-SG/Video-LLaMA-2-7B-Finetuned` from a filled HF cache, offline: the identity
    (torch-free, for resume) and the loaded model name the hub id, its revision and the family."""
    import shutil

    from vl2cli.model.identity import CheckpointIdentity

    name = next((n for n in FIXTURES if load_v1_fixture(n).has_audio), FIXTURES[0])
    fixture = load_v1_fixture(name)
    _use_fixture(monkeypatch, name)
    hub = tmp_path / "hub"
    shutil.copytree(fixture.root / "hub", hub)
    repo_id = "DAMO-NLP-SG/Video-LLaMA-2-7B-Finetuned"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(fixture.checkpoint_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("VL2_V1_LAVIS_DIR", str(fixture.lavis_folder))

    identity = CheckpointIdentity.resolve(repo_id, lavis_dir=str(fixture.lavis_folder))  # the model core: a parameter
    assert (identity.model_id, identity.revision, identity.family) == (repo_id, commit, "videollama")
    assert identity.has_audio == fixture.has_audio and identity.num_frames == 8
    model = api.load_model(repo_id, device="cpu", dtype="fp32")
    assert (model.model_id, model.revision, model.family) == (repo_id, commit, "videollama")
    media = fixture.root / fixture.golden["preprocess"]["video"]["file"]
    [record] = api.caption(model, str(media), max_new_tokens=2)
    assert record["error"] is None
    assert record["model"] == {"id": repo_id, "revision": commit, "family": "videollama"}
