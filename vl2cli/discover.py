"""Turn the paths a user typed into the list of media files to process, in a stable order.

Folders are walked (recursively by default) and filtered by extension and by include/exclude globs;
whether a file really is media is decided later by probing it. Problems met while walking (a symlink
loop, a folder we may not read) are collected as warnings so that one bad corner of an archive does
not stop a nightly run over the rest.
"""
from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import InputError, Vl2Error

MediaKindName = Literal["video", "image", "audio"]
MEDIA_KINDS: tuple[MediaKindName, ...] = ("video", "image", "audio")

#: Extensions a folder walk picks up, by kind. Files named on the command line skip this filter.
EXTENSIONS_BY_KIND: dict[str, frozenset[str]] = {
    "video": frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                        ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".gif"}),
    "image": frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}),
    "audio": frozenset({".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aiff", ".aif"}),
}


@dataclass
class WalkWarning:
    """Something skipped while walking: reported, never fatal."""

    path: str
    reason: Literal["symlink_loop", "unreadable_folder", "broken_symlink"]
    message: str


@dataclass
class Discovery:
    """The files to process (absolute paths, stable order, no duplicates) and what was skipped."""

    files: list[Path] = field(default_factory=list)
    warnings: list[WalkWarning] = field(default_factory=list)


def kind_from_extension(path: str | Path) -> str | None:
    """The media kind a file name suggests, or None when the extension is not one we know."""
    suffix = Path(path).suffix.lower()
    return next((kind for kind, suffixes in EXTENSIONS_BY_KIND.items() if suffix in suffixes), None)


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    """A glob matches either the path relative to the walked folder or the bare file name."""
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _selected(relative: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not _matches(relative, include):
        return False
    return not (exclude and _matches(relative, exclude))


def _walk_folder(root: Path, *, recursive: bool, kinds: frozenset[str], include: Sequence[str],
                 exclude: Sequence[str], warnings: list[WalkWarning]) -> Iterable[Path]:
    """Every matching file under `root`; follows symlinked folders but never into one seen before."""
    seen_folders: set[tuple[int, int]] = set()
    stack: list[Path] = [root]
    while stack:
        folder = stack.pop()
        try:
            stat = folder.stat()
        except OSError as exc:
            warnings.append(WalkWarning(str(folder), "unreadable_folder", f"{folder}: cannot read ({exc.strerror})"))
            continue
        identity = (stat.st_dev, stat.st_ino)
        if identity in seen_folders:
            warnings.append(WalkWarning(str(folder), "symlink_loop",
                                        f"{folder}: already visited through another path (symlink loop); skipped"))
            continue
        seen_folders.add(identity)
        try:
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            warnings.append(WalkWarning(str(folder), "unreadable_folder", f"{folder}: cannot list ({exc.strerror})"))
            continue
        subfolders: list[Path] = []
        for entry in children:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = not is_dir and entry.is_file(follow_symlinks=True)
            except OSError as exc:
                reason = "symlink_loop" if entry.is_symlink() else "unreadable_folder"
                warnings.append(WalkWarning(str(path), reason, f"{path}: cannot follow ({exc.strerror})"))
                continue
            if is_dir:
                if recursive:
                    subfolders.append(path)
            elif is_file:
                relative = path.relative_to(root).as_posix()
                if kind_from_extension(path) in kinds and _selected(relative, include, exclude):
                    yield path
            elif entry.is_symlink():
                warnings.append(WalkWarning(str(path), "broken_symlink", f"{path}: broken symlink; skipped"))
        stack.extend(reversed(subfolders))


def discover_media(
    inputs: Sequence[str | Path],
    *,
    recursive: bool = True,
    kinds: Iterable[str] = MEDIA_KINDS,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Discovery:
    """Expand files and folders into media files.

    Files named explicitly are always kept (probing decides what they are); files found in folders
    must have a known extension of one of `kinds` and pass the globs (`include`: any must match,
    `exclude`: none may match; a glob is matched against the path relative to the folder and against
    the file name). Hidden names (leading dot) are skipped. Order: inputs in the order given, each
    folder's files sorted by path. A path that does not exist is a user error (Vl2Error).
    """
    kinds = frozenset(kinds)
    unknown = kinds - set(MEDIA_KINDS)
    if unknown:
        raise Vl2Error(f"unknown media kind(s) {sorted(unknown)}; choose from {', '.join(MEDIA_KINDS)}")
    result = Discovery()
    seen: set[Path] = set()
    for raw in inputs:
        path = Path(os.path.abspath(raw))
        if path.is_dir():
            walked = _walk_folder(path, recursive=recursive, kinds=kinds, include=include, exclude=exclude,
                                  warnings=result.warnings)
            found: Iterable[Path] = sorted(walked, key=lambda file: file.relative_to(path).as_posix())
        elif path.exists():
            found = [path]
        else:
            raise InputError(f"{raw}: no such file or folder")
        for file in found:
            if file not in seen:
                seen.add(file)
                result.files.append(file)
    return result
