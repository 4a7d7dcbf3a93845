"""The test fixtures that travel with the repository, and where each fixture set's root is.

Three sets, each a folder of the format described in `tests/fixtures/README.md` (the format of the shared
`fixtures/<set>` folders they were packed from): `reference`, `reference-v1`, `media`. Each is tracked as
`tests/fixtures/<set>.json` (a manifest: every original file with its size and sha256, and how to rebuild it)
and `tests/fixtures/<set>.xz` (one xz stream holding the pieces). The rebuild is lossless: every file is
checked against its sha256 before the folder is used.

Roots: `reference_root()`, `reference_v1_root()`, `media_root()`. Each returns the folder its environment
variable names (`VL2_REFERENCE_FIXTURES`, `VL2_REFERENCE_V1_FIXTURES`, `VL2_MEDIA_FIXTURES`) when set, else
the set unpacked into `.fixtures/` in the checkout (done once per pack content; several processes starting at
once each build in a temporary folder and the first rename wins).

Packing (from folders of the shared format): `python tests/fixture_pack.py --from ../shared/fixtures`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_DIR = REPO_ROOT / "tests" / "fixtures"
CACHE_DIR = REPO_ROOT / ".fixtures"
SETS = {"reference": "VL2_REFERENCE_FIXTURES", "reference-v1": "VL2_REFERENCE_V1_FIXTURES", "media": "VL2_MEDIA_FIXTURES"}
FORMAT = 1
#: safetensors dtype name -> numpy dtype holding its bytes (bf16 is carried as its 16-bit pattern).
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U8": "u1", "BOOL": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8"}
#: The image processors' normalisations (tests/fixtures/README.md, "Pixel values").
NORMALISATIONS = {
    "clip": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
    "siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}


# ---------------------------------------------------------------- roots
def _root(name: str) -> Path:
    override = os.environ.get(SETS[name])
    if override:
        return Path(override)
    return unpacked(name)


def reference_root() -> Path:
    """The VideoLLaMA 2 reference fixtures (tiny checkpoints + goldens)."""
    return _root("reference")


def reference_v1_root() -> Path:
    """The Video-LLaMA (v1) reference fixtures."""
    return _root("reference-v1")


def media_root() -> Path:
    """The media fixtures (videos, images, wavs) and their preprocessing goldens under `golden/`."""
    return _root("media")


# ---------------------------------------------------------------- transforms (both directions)
def _shuffle(data: bytes, itemsize: int) -> bytes:
    """Byte planes of an array of `itemsize`-byte items (all first bytes, then all second bytes, ...)."""
    if itemsize == 1 or not data:
        return data
    return np.frombuffer(data, np.uint8).reshape(-1, itemsize).T.tobytes()


def _unshuffle(data: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or not data:
        return data
    return np.frombuffer(data, np.uint8).reshape(itemsize, -1).T.tobytes()


def pixel_lut(mean: float, std: float) -> np.ndarray:
    """float32 value of each uint8 level, as the transformers image processors compute it: rescale in float64
    (level * (1/255)), cast to float32, then normalize in float32: (x - float32(mean)) / float32(std)."""
    rescaled = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    return (rescaled - np.float32(mean)) / np.float32(std)


def _levels_to_pixels(levels: np.ndarray, mean: list[float], std: list[float], axis: int) -> np.ndarray:
    out = np.empty(levels.shape, np.float32)
    for channel in range(levels.shape[axis]):
        index = [slice(None)] * levels.ndim
        index[axis] = channel
        out[tuple(index)] = pixel_lut(mean[channel], std[channel])[levels[tuple(index)]]
    return out


def _decode_tensor(spec: dict, piece: bytes, dtype: str, shape: list[int]) -> bytes:
    enc = spec["enc"]
    np_dtype = np.dtype(DTYPES[dtype])
    if enc == "raw":
        return _unshuffle(piece, spec.get("shuffle", 1))
    if enc == "levels":
        levels = np.frombuffer(piece, np.uint8).reshape(shape)
        return _levels_to_pixels(levels, spec["mean"], spec["std"], spec["axis"]).astype(np_dtype).tobytes()
    if enc == "int16":
        ints = np.frombuffer(_unshuffle(piece, 2), "<i2")
        return (ints.astype(np.float64) / 32768).astype(np_dtype).tobytes()
    raise ValueError(f"unknown tensor encoding {enc!r}")


def _encode_tensor(name: str, dtype: str, shape: list[int], data: bytes) -> tuple[dict, bytes]:
    """The most compact exact encoding of one tensor: (spec, piece); the piece decodes to `data` bit for bit."""
    np_dtype = np.dtype(DTYPES[dtype])
    candidates: list[tuple[dict, bytes]] = []
    if dtype == "F32" and len(shape) >= 3 and shape[1] == 3 and "pixel" in name:
        for family, (mean, std) in NORMALISATIONS.items():
            values = np.frombuffer(data, np_dtype).reshape(shape).astype(np.float64)
            levels = np.empty(shape, np.uint8)
            for c in range(3):
                levels[:, c] = np.clip(np.rint((values[:, c] * std[c] + mean[c]) * 255), 0, 255)
            candidates.append(({"enc": "levels", "family": family, "mean": mean, "std": std, "axis": 1},
                               levels.tobytes()))
    if dtype in ("F32", "F64") and data:
        values = np.frombuffer(data, np_dtype).astype(np.float64)
        scaled = np.rint(values * 32768)
        if np.all((scaled >= -32768) & (scaled <= 32767)):
            candidates.append(({"enc": "int16"}, _shuffle(scaled.astype("<i2").tobytes(), 2)))
    for spec, piece in candidates:
        if _decode_tensor(spec, piece, dtype, shape) == data:
            return spec, piece
    spec = {"enc": "raw"}
    if np_dtype.itemsize > 1 and len(data) >= 4096:
        spec["shuffle"] = np_dtype.itemsize
    return spec, _shuffle(data, spec.get("shuffle", 1))


def _safetensors_layout(data: bytes) -> tuple[int, list[tuple[str, dict]]] | None:
    """(header length, [(name, entry)] in data order) when the data section is exactly the tensors, back to back."""
    if len(data) < 8:
        return None
    n = struct.unpack("<Q", data[:8])[0]
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        return None
    entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0])
    position = 0
    for _, entry in entries:
        start, end = entry["data_offsets"]
        if start != position or entry["dtype"] not in DTYPES:
            return None
        position = end
    return (n, entries) if 8 + n + position == len(data) else None


# ---------------------------------------------------------------- unpack
def pack_paths(name: str, pack_dir: Path = PACK_DIR) -> tuple[Path, Path]:
    return pack_dir / f"{name}.json", pack_dir / f"{name}.xz"


def _content_key(manifest: Path, payload: Path) -> str:
    digest = hashlib.sha256(manifest.read_bytes())
    digest.update(hashlib.sha256(payload.read_bytes()).digest())
    return digest.hexdigest()[:16]


def rebuild(manifest: dict, payload: bytes, target: Path) -> None:
    """Write every file of a pack under `target` and check each against the manifest's size and sha256."""
    view = memoryview(payload)

    def piece(at: list[int]) -> bytes:
        return bytes(view[at[0]:at[0] + at[1]])

    built: dict[str, bytes] = {}
    for entry in manifest["files"]:
        store = entry["store"]
        if store["kind"] == "bytes":
            data = piece(store["at"])
        elif store["kind"] == "copy":
            data = built[store["of"]]
        elif store["kind"] == "safetensors":
            head = piece(store["header"])
            n = struct.unpack("<Q", head[:8])[0]
            header = json.loads(head[8:8 + n])
            parts = [head]
            for tensor in store["tensors"]:
                info = header[tensor["name"]]
                parts.append(_decode_tensor(tensor, piece(tensor["at"]), info["dtype"], info["shape"]))
            data = b"".join(parts)
        else:
            raise ValueError(f"unknown store kind {store['kind']!r}")
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise RuntimeError(f"fixture pack {manifest['set']}: {entry['path']} did not rebuild exactly")
        path = target / entry["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        built[entry["path"]] = data


def unpacked(name: str, pack_dir: Path = PACK_DIR, cache_dir: Path = CACHE_DIR) -> Path:
    """The set's folder rebuilt from its pack in `.fixtures/` (built on first use; a missing pack gives a
    folder that does not exist, so the tests that need it skip as they do without fixtures).

    The folder only ever appears by renaming a temporary folder that was built and checked whole, so its
    existence means it is complete; processes racing to build it each build their own and the first rename
    wins. A read-only checkout builds under the system's temporary folder instead."""
    manifest_path, payload_path = pack_paths(name, pack_dir)
    if not (manifest_path.is_file() and payload_path.is_file()):
        return cache_dir / f"{name}-missing"
    folder = f"{name}-{_content_key(manifest_path, payload_path)}"
    caches = [cache_dir, Path(tempfile.gettempdir()) / f"vl2-fixtures-{os.getuid()}"]
    for cache in caches:
        if (cache / folder).is_dir():
            return cache / folder
    for cache in caches:
        try:
            cache.mkdir(exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".building-{folder}-", dir=cache))
        except OSError:
            continue
        final = cache / folder
        try:
            manifest = json.loads(manifest_path.read_text())
            rebuild(manifest, lzma.decompress(payload_path.read_bytes()), work)
            try:
                os.rename(work, final)
            except OSError:  # another process renamed its (identical) folder first
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return final
    raise OSError(f"no writable folder to unpack the {name} fixtures into (tried {', '.join(map(str, caches))})")


# ---------------------------------------------------------------- pack
def original_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def pack(name: str, source: Path, out_dir: Path = PACK_DIR) -> dict:
    """Pack folder `source` (of the shared format) as set `name`; returns the manifest. Checks the rebuild."""
    pieces: list[bytes] = []
    offset = 0

    def add(data: bytes) -> list[int]:
        nonlocal offset
        pieces.append(data)
        at = [offset, len(data)]
        offset += len(data)
        return at

    files = []
    first_of: dict[str, str] = {}
    for path in original_files(source):
        data = path.read_bytes()
        rel = path.relative_to(source).as_posix()
        digest = hashlib.sha256(data).hexdigest()
        entry = {"path": rel, "size": len(data), "sha256": digest}
        layout = _safetensors_layout(data) if rel.endswith(".safetensors") else None
        if digest in first_of:
            entry["store"] = {"kind": "copy", "of": first_of[digest]}
        elif layout is not None:
            n, tensors = layout
            base = 8 + n
            store = {"kind": "safetensors", "header": add(data[:base]), "tensors": []}
            for tensor_name, info in tensors:
                start, end = info["data_offsets"]
                spec, piece = _encode_tensor(tensor_name, info["dtype"], info["shape"], data[base + start:base + end])
                spec = {"name": tensor_name, **spec, "at": add(piece)}
                store["tensors"].append(spec)
            entry["store"] = store
        else:
            entry["store"] = {"kind": "bytes", "at": add(data)}
        first_of.setdefault(digest, rel)
        files.append(entry)
    payload = b"".join(pieces)
    compressed = lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                               filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME,
                                         "dict_size": max(1 << 20, min(1 << 27, len(payload)))}])
    manifest = {"format": FORMAT, "set": name, "payload": f"{name}.xz", "payload_sha256": hashlib.sha256(payload).hexdigest(),
                "payload_size": len(payload), "files": files}
    with tempfile.TemporaryDirectory() as check:
        rebuild(manifest, lzma.decompress(compressed), Path(check))
        for path in original_files(source):
            rel = path.relative_to(source)
            if (Path(check) / rel).read_bytes() != path.read_bytes():
                raise RuntimeError(f"{rel}: the rebuilt file differs from the original")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.xz").write_bytes(compressed)
    (out_dir / f"{name}.json").write_text(manifest_text(manifest))
    return manifest


def manifest_text(manifest: dict) -> str:
    """The manifest as json with one line per file (diffs of a re-pack stay readable)."""
    head = {k: v for k, v in manifest.items() if k != "files"}
    lines = [json.dumps(head)[:-1] + ', "files": [']
    lines += [json.dumps(entry, separators=(",", ":")) + "," for entry in manifest["files"]]
    lines[-1] = lines[-1].rstrip(",")
    return "\n".join(lines) + "\n]}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pack fixture folders of the shared format into tests/fixtures/.")
    parser.add_argument("--from", dest="source", type=Path, required=True,
                        help="folder holding reference/, reference-v1/ and media/ (e.g. ../shared/fixtures)")
    parser.add_argument("--set", dest="sets", action="append", choices=sorted(SETS), help="only this set (repeatable)")
    args = parser.parse_args(argv)
    for name in args.sets or list(SETS):
        started = time.perf_counter()
        manifest = pack(name, args.source / name)
        size = pack_paths(name)[1].stat().st_size
        original = sum(f["size"] for f in manifest["files"])
        print(f"{name}: {len(manifest['files'])} files, {original} bytes -> {size} bytes packed "
              f"({time.perf_counter() - started:.0f} s, rebuild checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
