"""The fixtures packed in tests/fixtures/: they rebuild exactly, the roots find them, the env variables override.

With the shared folder of the original format beside the checkout (`../shared/fixtures`), every unpacked
file is compared with its original byte for byte; without it those tests skip.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fixture_pack
from fixture_pack import SETS, pack, pack_paths, rebuild, unpacked

SHARED = fixture_pack.REPO_ROOT.parent / "shared" / "fixtures"
PACKED = [name for name in SETS if all(p.is_file() for p in pack_paths(name))]


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _manifest(name: str) -> dict:
    return json.loads(pack_paths(name)[0].read_text())


def test_every_set_is_packed():
    """A clone carries all three sets (without them the parity tests would skip, not fail)."""
    assert PACKED == list(SETS)


@pytest.mark.parametrize("name", PACKED)
def test_unpacked_set_matches_its_manifest(name):
    root = unpacked(name)
    manifest = _manifest(name)
    files = _files(root)
    assert sorted(files) == sorted(entry["path"] for entry in manifest["files"])
    for entry in manifest["files"]:
        data = files[entry["path"]].read_bytes()
        assert len(data) == entry["size"], entry["path"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]


@pytest.mark.parametrize("name", PACKED)
def test_unpacked_set_equals_the_shared_original(name):
    original = SHARED / name
    if not original.is_dir():
        pytest.skip(f"no {original} beside the checkout to compare with")
    unpacked_files, original_files = _files(unpacked(name)), _files(original)
    assert sorted(unpacked_files) == sorted(original_files)
    for rel, path in original_files.items():
        assert unpacked_files[rel].read_bytes() == path.read_bytes(), rel


@pytest.mark.parametrize("name", PACKED)
def test_default_roots_are_the_unpacked_sets(monkeypatch, name):
    monkeypatch.delenv(SETS[name], raising=False)
    root = {"reference": fixture_pack.reference_root, "reference-v1": fixture_pack.reference_v1_root,
            "media": fixture_pack.media_root}[name]()
    assert root == unpacked(name) and root.is_dir()


def test_env_variables_redirect_every_root(tmp_path):
    """In a fresh interpreter (the roots are read at import by the test modules), each variable names the
    folder the helpers then read: fixture lists come from the temporary folders, not from the packs."""
    reference, v1, media = tmp_path / "ref", tmp_path / "v1", tmp_path / "media"
    (reference / "only-ref" / "checkpoint").mkdir(parents=True)
    (reference / "only-ref" / "golden.json").write_text("{}")
    (v1 / "only-v1").mkdir(parents=True)
    (v1 / "only-v1" / "golden.json").write_text("{}")
    (v1 / "only-v1" / "golden.safetensors").write_bytes(b"")
    (media / "golden").mkdir(parents=True)
    (media / "golden" / "only.json").write_text(json.dumps({"kind": "video", "media": "only.mp4"}))
    env = {**os.environ, "VL2_REFERENCE_FIXTURES": str(reference), "VL2_REFERENCE_V1_FIXTURES": str(v1),
           "VL2_MEDIA_FIXTURES": str(media), "PYTHONPATH": str(Path(__file__).parent)}
    script = ("import json, fixture_pack, reference_fixtures as r, reference_v1_fixtures as v, media_helpers.fixtures as m;"
              "print(json.dumps([str(r.reference_root()), r.fixture_names(), str(v.reference_v1_root()), v.v1_fixture_names(),"
              " str(m.MEDIA_FIXTURES), m.goldens_of_kind('video'), str(fixture_pack.media_root())]))")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [str(reference), ["only-ref"], str(v1), ["only-v1"], str(media.resolve()), ["only"], str(media)]


# ---------------------------------------------------------------- the packer itself, on a small folder
def _safetensors(tensors: dict[str, np.ndarray], dtypes: dict[str, str]) -> bytes:
    header, offset, blobs = {}, 0, []
    for key, array in tensors.items():
        blob = array.tobytes()
        header[key] = {"dtype": dtypes[key], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


@pytest.fixture
def small_folder(tmp_path):
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    clip = np.stack([fixture_pack.pixel_lut(m, s)[levels[:, c]] for c, (m, s) in
                     enumerate(zip(*fixture_pack.NORMALISATIONS["clip"]))], axis=1)
    near_clip = clip.copy()
    near_clip.flat[5] = np.nextafter(near_clip.flat[5], np.float32(9))  # one ULP off: not levels any more
    tensors = {"pixel_values": clip, "near_pixel_values": near_clip,
               "waveform": (rng.integers(-32768, 32768, 5000) / 32768).astype(np.float32),
               "noise": rng.standard_normal(3000).astype(np.float32), "ids": np.arange(7, dtype=np.int64)}
    dtypes = {"pixel_values": "F32", "near_pixel_values": "F32", "waveform": "F32", "noise": "F32", "ids": "I64"}
    folder = tmp_path / "set"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.safetensors").write_bytes(_safetensors(tensors, dtypes))
    (folder / "sub" / "copy.safetensors").write_bytes((folder / "a.safetensors").read_bytes())
    (folder / "notes.txt").write_text("plain bytes\n")
    t = np.arange(8000) / 8000  # 1 s of the README's chirp, rounded as ffmpeg does, plus a little noise
    chirp = np.floor(0.3 * np.sin(2 * np.pi * (100 + 50 * t) * t) * 32768 + 0.5) + rng.integers(-1, 2, 8000)
    samples = np.stack([chirp, rng.integers(-3000, 3000, 8000)], axis=1).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 2, 8000, 32000, 4, 16)
    (folder / "tone.wav").write_bytes(b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt " + struct.pack("<I", 16)
                                      + fmt + b"data" + struct.pack("<I", len(samples)) + samples)
    (folder / "empty.bin").write_bytes(b"")
    return folder


def test_pack_rebuilds_a_folder_exactly_with_the_compact_encodings(small_folder, tmp_path):
    manifest = pack("small", small_folder, tmp_path / "packs")
    encodings = {t["name"]: t["enc"] for f in manifest["files"] if f["store"]["kind"] == "safetensors"
                 for t in f["store"]["tensors"]}
    assert encodings == {"pixel_values": "levels", "near_pixel_values": "raw", "waveform": "int16", "noise": "raw",
                         "ids": "raw"}
    stores = {f["path"]: f["store"] for f in manifest["files"]}
    assert stores["sub/copy.safetensors"]["kind"] == "copy"
    assert [c.get("signal") for c in stores["tone.wav"]["samples"]["predictor"]["channels"]] == ["chirp", None]
    root = unpacked("small", tmp_path / "packs", tmp_path / "cache")
    assert _files(root).keys() == _files(small_folder).keys()
    for rel, path in _files(small_folder).items():
        assert (root / rel).read_bytes() == path.read_bytes(), rel
    assert unpacked("small", tmp_path / "packs", tmp_path / "cache") == root  # once per content


def test_a_damaged_pack_is_refused(small_folder, tmp_path):
    import lzma

    manifest = pack("small", small_folder, tmp_path / "packs")
    payload = bytearray(lzma.decompress(pack_paths("small", tmp_path / "packs")[1].read_bytes()))
    noise = next(t for f in manifest["files"] if f["store"]["kind"] == "safetensors" for t in f["store"]["tensors"]
                 if t["name"] == "noise")
    payload[noise["at"][0]] ^= 1
    with pytest.raises(RuntimeError, match="did not rebuild exactly"):
        rebuild(manifest, bytes(payload), tmp_path / "out")


def test_processes_unpacking_at_once_all_get_the_one_folder(small_folder, tmp_path):
    pack("small", small_folder, tmp_path / "packs")
    script = ("import sys, fixture_pack; from pathlib import Path;"
              "print(fixture_pack.unpacked('small', Path(sys.argv[1]), Path(sys.argv[2])))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "packs"), str(tmp_path / "cache")],
                             env=env, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    folders = {run.communicate()[0].strip() for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert len(folders) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [Path(folders.pop()).name]  # no leftovers
