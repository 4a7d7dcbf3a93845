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

Packing (from folders of the shared format): `python tests/fixture_pack.py --from ../shared/fixtures`;
unpacking and checking the packed sets (what the tests do on first use): `python tests/fixture_pack.py`.
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
from contextlib import contextmanager
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


# ---------------------------------------------------------------- predicted tensors
# A tensor computed from others (an fbank from its waveform, a resampled waveform from its wav, a test tone from
# its formula) is stored as the difference between its bits and those of a prediction: the prediction, made in
# float64 from data already rebuilt, is rounded to a grid (float32's 23 mantissa bits, or integers), and the
# residual is the golden's integer bits minus the grid value's. The prediction may differ by a few ULP between
# machines (libm, SIMD, another numpy's FFT); values lying so close to a grid boundary (within 2**-40 relative)
# that this could move them to the other grid value are stored whole ("exceptions"), and the packer keeps a
# prediction only if the tensor also rebuilds with torch's FFTs and log (other_numerics). Constants of the
# predictions (window, mel filters) are stored in the manifest, not recomputed.
NEAR = 2.0 ** -40
#: The FFTs and log the predictions use (swapped for other implementations by the packer's robustness check).
NUMERICS = {"rfft": np.fft.rfft, "irfft": np.fft.irfft, "log": np.log}


@contextmanager
def other_numerics():
    """torch's FFTs and log in place of numpy's: a prediction is kept only if the tensor still rebuilds exactly
    with them, i.e. if it does not hang on the last bits of one FFT or libm."""
    import torch

    def wrap(function):
        return lambda x, *args: function(torch.from_numpy(np.ascontiguousarray(x)), *args).numpy()

    saved = dict(NUMERICS)
    NUMERICS.update(rfft=wrap(torch.fft.rfft), irfft=wrap(torch.fft.irfft), log=wrap(torch.log))
    try:
        yield
    finally:
        NUMERICS.update(saved)


def _wav_layout(data: bytes) -> tuple[int, int, int, int] | None:
    """(sample data offset, its length, channels, bits) of a RIFF WAVE file of PCM samples, else None."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position, fmt = 12, None
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], struct.unpack("<I", data[position + 4:position + 8])[0]
        if chunk == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[position + 8:position + 24])
        elif chunk == b"data" and fmt is not None and fmt[0] == 1 and fmt[5] == 16:
            return position + 8, min(size, len(data) - position - 8) // 2 * 2, fmt[1], fmt[5]
        position += 8 + size + (size & 1)
    return None


def _wav_samples(data: bytes) -> np.ndarray:
    start, length, channels, _ = _wav_layout(data)
    return np.frombuffer(data[start:start + length], "<i2").reshape(-1, channels)


SIGNALS = {
    # ffmpeg aevalsrc formulas of tests/fixtures/README.md ("Exact commands"), t = n / rate
    "chirp": lambda t, p: p["amp"] * np.sin(2 * np.pi * (p["f0"] + p["slope"] * t) * t),
    "am_tone": lambda t, p: p["amp"] * np.sin(2 * np.pi * p["f"] * t) * (0.5 + 0.5 * np.sin(2 * np.pi * p["fm"] * t)),
}


def _ordered_matmul(x: np.ndarray, weights: list[list]) -> np.ndarray:
    """x (frames, bins) times a sparse (bins -> outputs) matrix, summed in a fixed order (no BLAS)."""
    outputs = 1 + max(int(w[1]) for w in weights)
    out = np.zeros((x.shape[0], outputs))
    for j, o, value in weights:
        out[:, int(o)] += x[:, int(j)] * value
    return out


def predict(spec: dict, context: dict) -> np.ndarray:
    """The float64 prediction `spec` describes (flat)."""
    kind = spec["kind"]
    if kind == "zero":
        return np.zeros(spec["length"])
    if kind == "signal":
        t = np.arange(spec["length"], dtype=np.float64) / spec["rate"]
        return SIGNALS[spec["signal"]](t, spec) * spec["scale"]
    if kind == "interleave":
        return np.stack([predict(c, context) for c in spec["channels"]], axis=1).ravel()
    if kind == "tensor":
        return context["tensors"][spec["name"]].astype(np.float64).ravel() * spec["scale"]
    if kind == "wav":
        samples = _wav_samples(context["files"][spec["path"]])[:, spec["channel"]]
        return samples[spec["start"]:spec["start"] + spec["length"]].astype(np.float64) / 32768
    if kind == "resample_fft":  # scipy.signal.resample (librosa res_type="fft"), downsampling
        x = predict(spec["source"], context)
        num, n = spec["num"], len(x)
        spectrum = NUMERICS["rfft"](x)[:num // 2 + 1].copy()
        if num % 2 == 0:
            spectrum[num // 2] *= 2.0
        return NUMERICS["irfft"](spectrum, num) * (float(num) / float(n))
    if kind == "kaldi_fbank":  # torchaudio.compliance.kaldi.fbank, defaults + the fixtures' arguments
        x = predict(spec["source"], context) * spec["scale"]
        window = np.array(context["constants"][spec["window"]])
        length, shift, n_fft = len(window), spec["shift"], spec["n_fft"]
        frames = np.lib.stride_tricks.sliding_window_view(x, length)[::shift][:1 + (len(x) - length) // shift]
        total = np.zeros(len(frames))
        for i in range(length):
            total += frames[:, i]
        frames = frames - (total / length)[:, None]
        emphasised = frames.copy()
        emphasised[:, 1:] -= 0.97 * frames[:, :-1]
        emphasised[:, 0] -= 0.97 * frames[:, 0]
        spectrum = NUMERICS["rfft"](emphasised * window, n_fft)
        power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
        mel = _ordered_matmul(power, context["constants"][spec["banks"]])
        return NUMERICS["log"](np.maximum(mel, spec["floor"])).ravel()
    raise ValueError(f"unknown prediction {kind!r}")


def _grid(pred: np.ndarray, quantizer: dict) -> np.ndarray:
    """pred rounded to the quantizer's grid, as float64 (or int64 for integers)."""
    if quantizer["kind"] == "int":
        return np.floor(pred + 0.5).astype(np.int64)
    drop = 52 - quantizer["keep"]
    bits = pred.view(np.int64)
    sign = bits & np.int64(-(1 << 63))
    magnitude = (((bits ^ sign) + np.int64(1 << (drop - 1))) >> drop) << drop
    return (magnitude | sign).view(np.float64)


def _grid_bits(pred: np.ndarray, quantizer: dict, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(grid values as the golden dtype's unsigned bits, mask of predictions too near a grid boundary)."""
    delta = NEAR * np.maximum(np.abs(pred), 1.0)
    grid = _grid(pred, quantizer)
    near = _grid(pred + delta, quantizer) != _grid(pred - delta, quantizer)
    unsigned = np.dtype(f"<u{dtype.itemsize}")
    if quantizer["kind"] == "int":
        return grid.astype(np.int64).astype(dtype).view(unsigned), near
    return grid.astype(dtype).view(unsigned), near


def _encode_predicted(data: bytes, dtype: np.dtype, pred: np.ndarray, quantizer: dict) -> tuple[bytes, bytes, int]:
    golden = np.frombuffer(data, dtype.newbyteorder("<")).view(f"<u{dtype.itemsize}")
    grid, near = _grid_bits(pred, quantizer, dtype)
    width = 8 * dtype.itemsize
    residual = (golden - grid).view(f"<i{dtype.itemsize}").copy()
    residual[near] = 0
    zigzag = ((residual << 1) ^ (residual >> (width - 1))).view(f"<u{dtype.itemsize}")
    where = np.flatnonzero(near)
    exceptions = _shuffle(where.astype("<i8").tobytes(), 8) + golden[where].tobytes()
    return _shuffle(zigzag.tobytes(), dtype.itemsize), exceptions, len(where)


def _decode_predicted(spec: dict, residual: bytes, exceptions: bytes, dtype: np.dtype, context: dict) -> bytes:
    size = dtype.itemsize
    unsigned = np.dtype(f"<u{size}")
    zigzag = np.frombuffer(_unshuffle(residual, size), unsigned)
    residual_values = (zigzag >> 1) ^ (np.zeros_like(zigzag) - (zigzag & 1))
    grid, _ = _grid_bits(predict(spec["predictor"], context), spec["quantizer"], dtype)
    golden = grid + residual_values
    count = spec["exceptions"]
    where = np.frombuffer(_unshuffle(exceptions[:8 * count], 8), "<i8")
    golden[where] = np.frombuffer(exceptions[8 * count:], unsigned)
    return golden.tobytes()


def _webp_encode(array: np.ndarray, axis: int) -> tuple[bytes, list[int]]:
    """uint8 images (3 channels on `axis`, height and width the two axes before the last once it is moved
    last) as lossless WebP files, one per image."""
    import io

    from PIL import Image

    moved = np.moveaxis(array, axis, -1)
    blobs = []
    for image in moved.reshape(-1, *moved.shape[-3:]):
        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image), "RGB").save(out, format="WEBP", lossless=True, quality=100,
                                                                method=6, exact=True)
        blobs.append(out.getvalue())
    return b"".join(blobs), [len(b) for b in blobs]


def _webp_decode(piece: bytes, sizes: list[int], shape: list[int], axis: int) -> np.ndarray:
    import io

    from PIL import Image

    moved_shape = list(np.moveaxis(np.empty(shape, np.uint8), axis, -1).shape)
    images, position = [], 0
    for size in sizes:
        images.append(np.asarray(Image.open(io.BytesIO(piece[position:position + size])).convert("RGB")))
        position += size
    return np.moveaxis(np.stack(images).reshape(moved_shape), -1, axis)


def _decode_tensor(spec: dict, piece: bytes, dtype: str, shape: list[int]) -> bytes:
    enc = spec["enc"]
    np_dtype = np.dtype(DTYPES[dtype])
    if enc == "raw" and "webp" in spec:
        return np.ascontiguousarray(_webp_decode(piece, spec["webp"], shape, -1)).tobytes()
    if enc == "raw":
        return _unshuffle(piece, spec.get("shuffle", 1))
    if enc == "levels" and "webp" in spec:
        levels = _webp_decode(piece, spec["webp"], shape, spec["axis"])
        return _levels_to_pixels(levels, spec["mean"], spec["std"], spec["axis"]).astype(np_dtype).tobytes()
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
            return _smaller_as_webp(spec, piece, dtype, shape, data) if spec["enc"] == "levels" else (spec, piece)
    spec = {"enc": "raw"}
    if dtype == "U8" and len(shape) >= 3 and shape[-1] == 3 and min(shape[-3:-1]) >= 8:
        return _smaller_as_webp(spec, data, dtype, shape, data)
    if np_dtype.itemsize > 1 and len(data) >= 4096:
        spec["shuffle"] = np_dtype.itemsize
    return spec, _shuffle(data, spec.get("shuffle", 1))


def _smaller_as_webp(spec: dict, piece: bytes, dtype: str, shape: list[int], data: bytes) -> tuple[dict, bytes]:
    """The uint8 images of a levels or raw uint8 tensor as lossless WebP when that is smaller than xz would make them."""
    axis = spec.get("axis", -1)
    webp, sizes = _webp_encode(np.frombuffer(piece, np.uint8).reshape(shape), axis)
    if len(webp) >= len(lzma.compress(piece, preset=6)):
        return spec, piece
    candidate = {**spec, "webp": sizes}
    if _decode_tensor(candidate, webp, dtype, shape) != data:
        return spec, piece
    return candidate, webp


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


_keys: dict[tuple, str] = {}


def _content_key(manifest: Path, payload: Path) -> str:
    """A hash of the pack's two files (computed once per process while they stay unchanged)."""
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (manifest, payload))
    if stamp not in _keys:
        digest = hashlib.sha256(manifest.read_bytes())
        digest.update(hashlib.sha256(payload.read_bytes()).digest())
        _keys[stamp] = digest.hexdigest()[:16]
    return _keys[stamp]


def _stage(tensor: dict) -> int:
    if tensor["enc"] != "predicted":
        return 0
    return 2 if '"kind": "tensor"' in json.dumps(tensor["predictor"]) else 1


def rebuild(manifest: dict, payload: bytes, target: Path) -> None:
    """Write every file of a pack under `target` and check each against the manifest's size and sha256."""
    view = memoryview(payload)

    def piece(at: list[int]) -> bytes:
        return bytes(view[at[0]:at[0] + at[1]])

    built: dict[str, bytes] = {}
    constants = manifest.get("constants", {})
    for entry in manifest["files"]:
        store = entry["store"]
        if store["kind"] == "bytes":
            data = piece(store["at"])
        elif store["kind"] == "copy":
            data = built[store["of"]]
        elif store["kind"] == "wav":
            context = {"files": built, "constants": constants}
            samples = _decode_predicted(store["samples"], piece(store["samples"]["at"]),
                                        piece(store["samples"]["exceptions_at"]), np.dtype("<i2"), context)
            data = piece(store["header"]) + samples + piece(store["tail"])
        elif store["kind"] == "safetensors":
            head = piece(store["header"])
            n = struct.unpack("<Q", head[:8])[0]
            header = json.loads(head[8:8 + n])
            context = {"files": built, "constants": constants, "tensors": {}}
            decoded: dict[str, bytes] = {}
            # tensors stored as themselves, then predictions, then predictions that read other tensors
            for stage in (0, 1, 2):
                for tensor in store["tensors"]:
                    if _stage(tensor) != stage:
                        continue
                    predicted = stage > 0
                    info = header[tensor["name"]]
                    dtype = np.dtype(DTYPES[info["dtype"]])
                    if predicted:
                        blob = _decode_predicted(tensor, piece(tensor["at"]), piece(tensor["exceptions_at"]), dtype, context)
                    else:
                        blob = _decode_tensor(tensor, piece(tensor["at"]), info["dtype"], info["shape"])
                    decoded[tensor["name"]] = blob
                    context["tensors"][tensor["name"]] = np.frombuffer(blob, dtype).reshape(info["shape"])
            data = b"".join([head] + [decoded[t["name"]] for t in store["tensors"]])
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
    constants = fbank_constants()
    built: dict[str, bytes] = {}
    # plain files first: predictions of the safetensors may read them (a golden's wav)
    for path in sorted(original_files(source), key=lambda p: (p.suffix == ".safetensors", p.relative_to(source).as_posix())):
        data = path.read_bytes()
        rel = path.relative_to(source).as_posix()
        built[rel] = data
        digest = hashlib.sha256(data).hexdigest()
        entry = {"path": rel, "size": len(data), "sha256": digest}
        layout = _safetensors_layout(data) if rel.endswith(".safetensors") else None
        wav = _wav_layout(data) if rel.endswith(".wav") else None
        if digest in first_of:
            entry["store"] = {"kind": "copy", "of": first_of[digest]}
        elif layout is not None:
            n, tensors = layout
            base = 8 + n
            store = {"kind": "safetensors", "header": add(data[:base]), "tensors": []}
            arrays = {name: np.frombuffer(data[base + info["data_offsets"][0]:base + info["data_offsets"][1]],
                                          DTYPES[info["dtype"]]).reshape(info["shape"]) for name, info in tensors}
            context = {"files": built, "constants": constants, "tensors": arrays}
            for tensor_name, info in tensors:
                start, end = info["data_offsets"]
                blob = data[base + start:base + end]
                spec, piece = _encode_tensor(tensor_name, info["dtype"], info["shape"], blob)
                best = _compressed_size(piece)
                for predictor, quantizer in _tensor_predictions(rel, tensor_name, info, source, arrays):
                    dtype = np.dtype(DTYPES[info["dtype"]])
                    residual, exceptions, count = _encode_predicted(blob, dtype, predict(predictor, context), quantizer)
                    candidate = {"enc": "predicted", "predictor": predictor, "quantizer": quantizer, "exceptions": count}
                    if _decode_predicted(candidate, residual, exceptions, dtype, context) != blob:
                        continue
                    with other_numerics():
                        if _decode_predicted(candidate, residual, exceptions, dtype, context) != blob:
                            continue
                    size = _compressed_size(residual) + len(exceptions)
                    if size < best:
                        best, spec, piece, extra = size, candidate, residual, exceptions
                spec = {"name": tensor_name, **spec, "at": add(piece)}
                if spec["enc"] == "predicted":
                    spec["exceptions_at"] = add(extra)
                store["tensors"].append(spec)
            entry["store"] = store
        elif wav is not None:
            start, length, channels, _ = wav
            samples = data[start:start + length]
            context = {"files": built, "constants": constants}
            frames = length // 2 // channels
            chosen = []
            for channel in range(channels):
                column = np.frombuffer(samples, "<i2").reshape(-1, channels)[:, channel].astype(np.float64)
                options = [{"kind": "zero", "length": frames}] + [
                    {"kind": "signal", **signal, "rate": wav_rate(data), "length": frames, "scale": 32768.0}
                    for signal in SIGNAL_CANDIDATES]
                chosen.append(min(options, key=lambda o: float(np.mean(np.abs(column - predict(o, context))))))
            predictor = {"kind": "interleave", "channels": chosen}
            quantizer = {"kind": "int"}
            residual, exceptions, count = _encode_predicted(samples, np.dtype("<i2"), predict(predictor, context), quantizer)
            entry["store"] = {"kind": "wav", "header": add(data[:start]), "tail": add(data[start + length:]),
                              "samples": {"enc": "predicted", "predictor": predictor, "quantizer": quantizer,
                                          "exceptions": count, "at": add(residual), "exceptions_at": add(exceptions)}}
        else:
            entry["store"] = {"kind": "bytes", "at": add(data)}
        first_of.setdefault(digest, rel)
        files.append(entry)
    payload = b"".join(pieces)
    compressed = lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                               filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME,
                                         "dict_size": max(1 << 20, min(1 << 27, len(payload)))}])
    manifest = {"format": FORMAT, "set": name, "payload": f"{name}.xz", "payload_sha256": hashlib.sha256(payload).hexdigest(),
                "payload_size": len(payload), "constants": constants, "files": files}
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


SIGNAL_CANDIDATES = [{"signal": "chirp", "amp": 0.3, "f0": 100.0, "slope": 50.0},
                     {"signal": "am_tone", "amp": 0.3, "f": 880.0, "fm": 0.25}]


def wav_rate(data: bytes) -> int:
    position = data.index(b"fmt ")
    return struct.unpack("<I", data[position + 12:position + 16])[0]


def _compressed_size(data: bytes) -> int:
    return len(lzma.compress(data, preset=1))


def fbank_constants() -> dict:
    """Povey windows (float32 and float64) and the 128 kaldi mel filters for 512-point FFTs at 16 kHz, as
    torchaudio builds them (float32 arithmetic for the filters), stored with the pack so that predictions
    need no libm call but the final log."""
    f32 = lambda v: np.asarray(v, np.float64).astype(np.float32).astype(np.float64)  # noqa: E731
    n = np.arange(400, dtype=np.float64)
    window64 = (0.5 - 0.5 * np.cos(2 * np.pi * n / 399)) ** 0.85
    hann32 = f32(0.5 - f32(0.5 * f32(np.cos(f32(2 * np.pi * n / 399)))))
    window32 = f32(hann32 ** 0.85)
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    low, high = mel(20.0), mel(8000.0)
    delta = (high - low) / 129
    b = np.arange(128, dtype=np.float64)[:, None]
    left, center, right = f32(low + b * delta), f32(low + (b + 1) * delta), f32(low + (b + 2) * delta)
    freq = f32(16000 / 512 * np.arange(256, dtype=np.float64))
    m = f32(1127.0 * f32(np.log(f32(1.0 + f32(freq / 700.0)))))[None, :]
    up, down = f32(f32(m - left) / f32(center - left)), f32(f32(right - m) / f32(right - center))
    banks = np.maximum(0.0, np.minimum(up, down))
    weights = [[int(j), int(o), float(banks[o, j])] for j in range(256) for o in range(128) if banks[o, j] > 0]
    return {"povey400_f32": window32.tolist(), "povey400_f64": window64.tolist(), "mel128_n512_16k": weights}


def _tensor_predictions(rel: str, name: str, info: dict, source: Path, arrays: dict) -> list[tuple[dict, dict]]:
    """Predictions worth trying for one tensor of a media golden (tests/fixtures/README.md says what they are)."""
    golden_json = source / (rel[:-len(".safetensors")] + ".json")
    if info["dtype"] not in ("F32", "F64") or not golden_json.is_file():
        return []
    meta = json.loads(golden_json.read_text())
    quantizer = {"kind": "float", "keep": 23}
    resampled = None
    crop = meta.get("random_crop") or {}
    if meta.get("kind") == "wav" and meta.get("samplerate", 16000) != 16000:
        rate = meta["samplerate"]
        resampled = {"kind": "resample_fft", "num": 480000, "source": {
            "kind": "wav", "path": meta["media"], "channel": 0, "start": crop.get("start_sample_at_native_sr", 0),
            "length": 30 * rate}}
    if name == "waveform_16k" and resampled is not None:
        return [(resampled, quantizer)]
    if name == "fbank" and info["shape"] == [2998, 128] and "waveform_16k" in arrays:
        fbank = {"kind": "kaldi_fbank", "scale": 32768.0, "shift": 160, "n_fft": 512, "floor": float(np.finfo(np.float32).eps),
                 "window": "povey400_f32" if info["dtype"] == "F32" else "povey400_f64", "banks": "mel128_n512_16k"}
        # From the stored waveform_16k, even where upstream's fbank input was the float64 resampled waveform (a
        # prediction from our own resampling would be 27 % smaller, but an FFT of another numpy could move
        # its quiet bins by 1e-9: not safe to round).
        sources = [{"kind": "tensor", "name": "waveform_16k", "scale": 1.0}]
        return [({**fbank, "source": src}, quantizer) for src in sources]
    return []


def manifest_text(manifest: dict) -> str:
    """The manifest as json with one line per file (diffs of a re-pack stay readable)."""
    head = {k: v for k, v in manifest.items() if k != "files"}
    lines = [json.dumps(head)[:-1] + ', "files": [']
    lines += [json.dumps(entry, separators=(",", ":")) + "," for entry in manifest["files"]]
    lines[-1] = lines[-1].rstrip(",")
    return "\n".join(lines) + "\n]}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pack fixture folders of the shared format into tests/fixtures/, "
                                                 "or (without --from) unpack and check the packed sets.")
    parser.add_argument("--from", dest="source", type=Path,
                        help="folder holding reference/, reference-v1/ and media/ (e.g. ../shared/fixtures)")
    parser.add_argument("--set", dest="sets", action="append", choices=sorted(SETS), help="only this set (repeatable)")
    args = parser.parse_args(argv)
    for name in args.sets or list(SETS):
        started = time.perf_counter()
        if args.source is None:
            folder = unpacked(name)
            print(f"{name}: {folder} ({time.perf_counter() - started:.1f} s; every file checked when it was built)")
            continue
        manifest = pack(name, args.source / name)
        size = sum(p.stat().st_size for p in pack_paths(name))
        original = sum(f["size"] for f in manifest["files"])
        print(f"{name}: {len(manifest['files'])} files, {original} bytes -> {size} bytes packed "
              f"({time.perf_counter() - started:.0f} s, rebuild checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
