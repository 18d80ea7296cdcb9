"""Writing generated files: chosen formats, nothing overwritten without --force, nothing half-written."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from .errors import OutputError
from .render import ALIASES, FORMATS, render

STDOUT = "-"


def parse_formats(formats: str) -> list[str]:
    """``md,tex,py`` -> canonical format names, in order, without repeats; ``all`` is every format; unknown
    names are an error."""
    chosen = []
    for name in (part.strip() for part in formats.split(",")):
        if not name:
            continue
        if name == "all":
            chosen += [fmt for fmt in FORMATS if fmt not in chosen]
            continue
        canonical = ALIASES.get(name, name)
        if canonical not in FORMATS:
            allowed = ", ".join([*ALIASES, *FORMATS, "all"])
            raise OutputError(f"--format: unknown format {name!r}; allowed: {allowed}")
        if canonical not in chosen:
            chosen.append(canonical)
    if not chosen:
        raise OutputError("--format: no format given")
    return chosen


def check_targets(formats: str, out_dir: str, *, force: bool = False) -> list[str]:
    """The chosen formats, after refusing what the run could not write: call it before any slow work.

    ``out_dir`` ``-`` (stdout) takes exactly one format; otherwise existing files are refused unless
    ``force``, and a directory standing where a file would go is always refused.
    """
    chosen = parse_formats(formats)
    if out_dir == STDOUT:
        if len(chosen) != 1:
            raise OutputError(f"--out -: writes one format to stdout, got {len(chosen)} "
                              f"({', '.join(chosen)}); choose one with --format")
        return chosen
    targets = [Path(out_dir) / FORMATS[fmt][1] for fmt in chosen]
    directories = [str(path) for path in targets if path.is_dir()]
    if directories:
        raise OutputError(f"{', '.join(directories)}: is a directory; remove it or choose another --out")
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise OutputError(f"{', '.join(existing)} already exist(s); use --force to overwrite")
    return chosen


def write_outputs(derivation, report, formats: str, out_dir: str, *, force: bool = False, lang: str = "en",
                  batch: int = 64, options=None):
    """Render every chosen format, then write them all; return the paths written.

    ``batch`` is the batch size of the memory table in the lecture formats; ``options`` (a
    ``lecture.LectureOptions``) the lecturer's choices.
    ``out_dir`` ``-`` prints the one chosen format on stdout instead (and returns no path). Every file is
    rendered before any is written, all are written to temporary files beside their targets and only then
    renamed into place, and existing files are refused (before anything is written) unless ``force``.
    If writing a temporary file fails, all are removed and no target has been touched; a failing rename
    (everything is staged by then) still leaves each target whole, old or new.
    """
    chosen = check_targets(formats, out_dir, force=force)
    texts = [render(derivation, fmt, lang=lang, report=report, batch=batch, options=options) for fmt in chosen]
    if out_dir == STDOUT:
        sys.stdout.write(texts[0])
        sys.stdout.flush()
        return []
    directory = Path(out_dir)
    targets = [directory / FORMATS[fmt][1] for fmt in chosen]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"--out: cannot create {directory}: {error.strerror or error}") from None
    staged = []
    try:
        for path, text in zip(targets, texts):
            staged.append((_stage(path, text), path))
        for temporary, path in staged:
            os.replace(temporary, path)
    except BaseException as error:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputError(f"cannot write to {directory}: {error.strerror or error}") from None
        raise
    return [str(path) for path in targets]


def _stage(path: Path, text: str) -> str:
    """Write ``text`` to a temporary file beside ``path`` (same file system, so the rename is atomic).

    The file gets the mode the target has, or for a new file the mode ``open`` would give (0666 less the
    umask), not mkstemp's private 0600.
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.chmod(temporary, _mode(path))
            os.fsync(handle.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary


def _mode(path: Path) -> int:
    """Permission bits for ``path``: kept if it exists, else 0666 less the process umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
