"""Writing generated files: chosen formats, nothing overwritten without --force, nothing half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OutputError
from .render import ALIASES, FORMATS, render


def parse_formats(formats: str) -> list[str]:
    """``md,tex,py`` -> canonical format names, in order, without repeats; unknown names are an error."""
    chosen = []
    for name in (part.strip() for part in formats.split(",")):
        if not name:
            continue
        canonical = ALIASES.get(name, name)
        if canonical not in FORMATS:
            allowed = ", ".join([*ALIASES, *FORMATS])
            raise OutputError(f"--format: unknown format {name!r}; allowed: {allowed}")
        if canonical not in chosen:
            chosen.append(canonical)
    if not chosen:
        raise OutputError("--format: no format given")
    return chosen


def write_outputs(derivation, report, formats: str, out_dir: str, *, force: bool = False, lang: str = "en"):
    """Render every chosen format, then write them all; return the paths written.

    Every file is rendered before any is written, each is written to a temporary file and renamed into
    place, and existing files are refused (before anything is written) unless ``force``.
    """
    chosen = parse_formats(formats)
    directory = Path(out_dir)
    targets = [directory / FORMATS[fmt][1] for fmt in chosen]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise OutputError(f"{', '.join(existing)} already exist(s); use --force to overwrite")
    texts = [render(derivation, fmt, lang=lang, report=report) for fmt in chosen]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"--out: cannot create {directory}: {error.strerror}") from None
    staged = []
    try:
        for path, text in zip(targets, texts):
            staged.append((_stage(path, text), path))
        for temporary, path in staged:
            os.replace(temporary, path)
    except OSError as error:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)
        raise OutputError(f"cannot write to {directory}: {error.strerror}") from None
    return [str(path) for path in targets]


def _stage(path: Path, text: str) -> str:
    """Write ``text`` to a temporary file beside ``path`` (same file system, so the rename is atomic)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary
