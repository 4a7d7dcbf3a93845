"""Turn the paths a user typed into the list of media files to process, in a stable order.

Folders are walked (recursively by default) and filtered by extension and by include/exclude globs;
whether a file really is media is decided later by probing it. Problems met while walking (a symlink
loop, a folder we may not read) are collected as warnings so that one bad corner of an archive does
not stop a nightly run over the rest.
"""
from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import InputError, Vl2Error

MediaKindName = Literal["video", "image", "audio"]
MEDIA_KINDS: tuple[MediaKindName, ...] = ("video", "image", "audio")

#: Extensions a folder walk picks up, by kind: every one whose files PyAV's FFmpeg (or, for images,
#: Pillow) decodes. Files named on the command line skip this filter. Not walked: .jxl (neither PyAV's
#: FFmpeg build nor Pillow has a JPEG XL decoder), .heic/.heif (no HEIF decoder in Pillow), .mid (no
#: sound to decode), subtitles and playlists.
EXTENSIONS_BY_KIND: dict[str, frozenset[str]] = {
    "video": frozenset({".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".divx", ".mpg", ".mpeg", ".m1v",
                        ".m2v", ".mpv", ".vob", ".mod", ".tod", ".ts", ".mts", ".m2ts", ".m2p", ".ps", ".flv",
                        ".f4v", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".gif", ".dv", ".mxf", ".rm", ".rmvb",
                        ".nut", ".ivf", ".y4m", ".wtv", ".mjpeg", ".mjpg", ".h264", ".264", ".hevc", ".265",
                        ".amv"}),
    "image": frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".avif"}),
    "audio": frozenset({".wav", ".flac", ".mp3", ".m4a", ".m4b", ".aac", ".ogg", ".oga", ".opus", ".spx", ".wma",
                        ".aiff", ".aif", ".aifc", ".ac3", ".eac3", ".mp2", ".mpa", ".caf", ".mka", ".dts", ".amr",
                        ".ape", ".wv", ".tta", ".au", ".snd", ".w64", ".voc", ".ra", ".gsm"}),
}


@dataclass(frozen=True)
class WalkOptions:
    """Which files a walk of folders picks up: the walk's settings, declared once.

    `Settings` takes its defaults from here and `vl2cli.run.walk_options` builds one from a run's
    settings; the run path (`tasks.outcomes.iter_outcomes`, `plan_run`) takes one object instead of
    repeating the four keywords. Only values live here, so one WalkOptions can be compared, printed
    and reused for any number of runs. The run's hooks stay keywords of `iter_outcomes`: `listed`
    (paths read lazily from a list: inputs, and consumed once), `keep` (the shard's predicate,
    computed per run from where its output goes, not a walk setting) and `on_warning`/`on_walk_end`
    (who listens to the walk, not what it picks up).
    """

    recursive: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    kinds: tuple[str, ...] = MEDIA_KINDS

    def __post_init__(self) -> None:  # lists from settings or a caller: held as tuples, so the object stays frozen
        for name in ("include", "exclude", "kinds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def iter_media(self, inputs: Sequence[str | Path], *,
                   on_warning: Callable[[WalkWarning], None] | None = None) -> Iterator[Path]:
        """`iter_media` with these options."""
        return map(Path, self.iter_paths(inputs, on_warning=on_warning))

    def iter_paths(self, inputs: Sequence[str | Path], *,
                   on_warning: Callable[[WalkWarning], None] | None = None) -> Iterator[str]:
        """`iter_media_paths` with these options (path strings: no object per file beyond the walk's own)."""
        return iter_media_paths(inputs, recursive=self.recursive, kinds=self.kinds, include=self.include,
                                exclude=self.exclude, on_warning=on_warning)


@dataclass
class WalkWarning:
    """Something skipped while walking: reported, never fatal."""

    path: str
    reason: Literal["symlink_loop", "unreadable_folder", "broken_symlink", "bad_list_entry"]
    message: str


@dataclass
class Discovery:
    """The files to process (absolute paths, stable order, no duplicates) and what was skipped."""

    files: list[Path] = field(default_factory=list)
    warnings: list[WalkWarning] = field(default_factory=list)


_KIND_BY_EXTENSION = {suffix: kind for kind, suffixes in EXTENSIONS_BY_KIND.items() for suffix in suffixes}


def kind_from_extension(path: str | Path) -> str | None:
    """The media kind a file name suggests, or None when the extension is not one we know."""
    return _KIND_BY_EXTENSION.get(Path(path).suffix.lower())


def _kind_of_name(name: str) -> str | None:
    """`kind_from_extension` of a bare file name, in string operations (the walk asks it of every file)."""
    dot = name.rfind(".")
    return _KIND_BY_EXTENSION.get(name[dot:].lower()) if 0 < dot < len(name) - 1 else None


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    """A glob matches either the path relative to the walked folder or the bare file name, ignoring
    case on every system, as the extension filter does (`*.mp4` takes `CLIP.MP4`)."""
    relative = relative.casefold()
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relative, pattern.casefold()) or fnmatch.fnmatchcase(name, pattern.casefold())
               for pattern in patterns)


def _selected(relative: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not _matches(relative, include):
        return False
    return not (exclude and _matches(relative, exclude))


def _walk_folder(root: Path, *, recursive: bool, kinds: frozenset[str], include: Sequence[str],
                 exclude: Sequence[str], warn: Callable[[WalkWarning], None]) -> Iterator[str]:
    """Every matching file under `root`, streamed in path order (names sorted per folder, depth first).

    Follows symlinked folders but never into one seen before. Only the folders on the way down are
    held, so the walk of a million-file archive starts yielding at once and in flat memory.
    """
    seen_folders: set[tuple[int, int]] = set()
    root_prefix = len(os.path.join(str(root), ""))

    def visit(folder: Path) -> Iterator[str]:
        try:
            stat = folder.stat()
        except OSError as exc:
            warn(WalkWarning(str(folder), "unreadable_folder", f"{folder}: cannot read ({exc.strerror})"))
            return
        identity = (stat.st_dev, stat.st_ino)
        if identity in seen_folders:
            warn(WalkWarning(str(folder), "symlink_loop",
                             f"{folder}: already visited through another path (symlink loop); skipped"))
            return
        seen_folders.add(identity)
        try:
            with os.scandir(folder) as entries:
                children = sorted(((entry.name, entry) for entry in entries), key=lambda pair: pair[0])
        except OSError as exc:
            warn(WalkWarning(str(folder), "unreadable_folder", f"{folder}: cannot list ({exc.strerror})"))
            return
        for name, entry in children:
            if name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = not is_dir and entry.is_file(follow_symlinks=True)
            except OSError as exc:
                reason = "symlink_loop" if entry.is_symlink() else "unreadable_folder"
                warn(WalkWarning(entry.path, reason, f"{entry.path}: cannot follow ({exc.strerror})"))
                continue
            if is_dir:
                if recursive:
                    yield from visit(Path(entry.path))
            elif is_file:
                # string operations, not pathlib: this runs for every file of an archive, done or not
                if _kind_of_name(name) in kinds and (not (include or exclude) or _selected(
                        entry.path[root_prefix:].replace(os.sep, "/"), include, exclude)):
                    yield entry.path  # absolute, normalised: the root is, and names are joined to it
            elif entry.is_symlink():
                warn(WalkWarning(entry.path, "broken_symlink", f"{entry.path}: broken symlink; skipped"))

    yield from visit(root)


def iter_media(
    inputs: Sequence[str | Path],
    *,
    recursive: bool = True,
    kinds: Iterable[str] = MEDIA_KINDS,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    on_warning: Callable[[WalkWarning], None] | None = None,
) -> Iterator[Path]:
    """`iter_media_paths` as Paths (see there)."""
    return map(Path, iter_media_paths(inputs, recursive=recursive, kinds=kinds, include=include, exclude=exclude,
                                      on_warning=on_warning))


def iter_media_paths(
    inputs: Sequence[str | Path],
    *,
    recursive: bool = True,
    kinds: Iterable[str] = MEDIA_KINDS,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    on_warning: Callable[[WalkWarning], None] | None = None,
) -> Iterator[str]:
    """Expand files and folders into media files, lazily: the first file comes before the walk ends; as
    absolute, normalised path strings (a Path each costs more than the stat: the run path makes one only
    for the files that need work, so a rerun of a done archive makes none).

    Files named explicitly are always kept (probing decides what they are); files found in folders
    must have a known extension of one of `kinds` and pass the globs (`include`: any must match,
    `exclude`: none may match; a glob is matched against the path relative to the folder and against
    the file name). Hidden names (leading dot) are skipped. Order: inputs in the order given, each
    folder's files in path order (names sorted per folder, depth first). Problems met while walking
    go to `on_warning` as they happen. Checked before anything is yielded (Vl2Error): unknown kinds,
    an input path that does not exist.
    """
    kinds = frozenset(kinds)
    unknown = kinds - set(MEDIA_KINDS)
    if unknown:
        raise Vl2Error(f"unknown media kind(s) {sorted(unknown)}; choose from {', '.join(MEDIA_KINDS)}")
    absolute = [Path(os.path.abspath(raw)) for raw in inputs]
    for raw, path in zip(inputs, absolute):
        if not _named_input_exists(path):
            raise InputError(f"{raw}: no such file or folder")
    return _expand(absolute, recursive=recursive, kinds=kinds, include=include, exclude=exclude,
                   warn=on_warning or (lambda warning: None))


def _named_input_exists(path: Path) -> bool:
    """False only for a path that is really not there. One that exists but cannot be read (no permission
    on it or a parent folder) counts as there: its file gets an `unreadable_file` record, as in a walk,
    instead of refusing the whole run."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def _is_readable_dir(path: Path) -> bool:
    """`Path.is_dir`, but False (not PermissionError) for a path this user may not look at."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _expand(paths: list[Path], *, recursive: bool, kinds: frozenset[str], include: Sequence[str],
            exclude: Sequence[str], warn: Callable[[WalkWarning], None]) -> Iterator[str]:
    # Duplicates can only come from overlapping inputs, so a lone input needs no memory of what it saw.
    seen: set[str] | None = set() if len(paths) > 1 else None
    for path in paths:
        if _is_readable_dir(path):
            found: Iterable[str] = _walk_folder(path, recursive=recursive, kinds=kinds, include=include,
                                                exclude=exclude, warn=warn)
        else:
            found = [str(path)]
        for file in found:
            if seen is not None:
                if file in seen:
                    continue
                seen.add(file)
            yield file


def discover_media(
    inputs: Sequence[str | Path],
    *,
    recursive: bool = True,
    kinds: Iterable[str] = MEDIA_KINDS,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Discovery:
    """`iter_media` collected into a list, with the walk's warnings (for callers that want it all)."""
    result = Discovery()
    result.files.extend(iter_media(inputs, recursive=recursive, kinds=kinds, include=include, exclude=exclude,
                                   on_warning=result.warnings.append))
    return result
