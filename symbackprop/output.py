"""Writing generated files: chosen formats, nothing overwritten without --force, nothing half-written, and
no run replacing another's files, even when several write into one directory at the same time.

Only the renderer (imported inside :func:`write_outputs`) brings in SymPy, so :func:`check_targets` can
refuse a run before any slow work.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import OutputError, allowed
from .files import not_regular, reason
from .formats import ALIASES, DEFAULT_NAME, FORMATS, FRAMEWORK_FORMATS, TEX_FORMATS, file_name

STDOUT = "-"
# A base name for the output files: a plain file name, no directories.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# How long pdflatex may take on one document (a deep network's deck has hundreds of pages).
PDF_TIMEOUT = 600


def parse_formats(formats: str) -> list[str]:
    """``md,tex,py`` -> canonical format names, in order, without repeats; ``all`` is every format but the
    framework ones (``torch``, ``jax``: their modules need PyTorch or JAX to run); unknown names are an error."""
    chosen = []
    for name in (part.strip() for part in formats.split(",")):
        if not name:
            continue
        if name == "all":
            chosen += [fmt for fmt in FORMATS if fmt not in chosen and fmt not in FRAMEWORK_FORMATS]
            continue
        canonical = ALIASES.get(name, name)
        if canonical not in FORMATS:
            hint = " (a PDF is compiled from the .tex formats with --pdf)" if name.lower() == "pdf" else ""
            raise OutputError(f"--format: unknown format {name!r}{hint}; "
                              f"{allowed(name, [*ALIASES, *FORMATS, 'all'])}")
        if canonical not in chosen:
            chosen.append(canonical)
    if not chosen:
        raise OutputError("--format: no format given")
    return chosen


def check_targets(formats: str, out_dir: str, *, force: bool = False, name: str = DEFAULT_NAME,
                  pdf: bool = False) -> list[str]:
    """The chosen formats, after refusing what the run could not write: call it before any slow work.

    ``out_dir`` ``-`` (stdout) takes exactly one format and an open stdout; otherwise existing files (a
    dangling symbolic link counts) are refused unless ``force``, and a directory standing where a file
    would go is always refused. ``name`` is the files' base name; ``pdf`` asks for a PDF of each LaTeX
    format, which needs pdflatex. :func:`write_outputs` checks again as it writes, where it counts.
    """
    chosen = parse_formats(formats)
    if not _NAME.fullmatch(name):
        raise OutputError(f"--name: {name!r} is not a plain file name; use letters, digits and _ . - "
                          "(at most 100 characters, no directories)")
    if pdf:
        if out_dir == STDOUT:
            raise OutputError("--pdf writes files; it cannot go with --out -")
        if not any(fmt in TEX_FORMATS for fmt in chosen):
            raise OutputError("--pdf: no LaTeX format chosen; add tex or beamer to --format")
        if shutil.which("pdflatex") is None:
            raise OutputError("--pdf: pdflatex is not installed (on Debian: apt-get install "
                              "texlive-latex-recommended texlive-pictures texlive-lang-korean)")
    if out_dir == STDOUT:
        if len(chosen) != 1:
            raise OutputError(f"--out -: writes one format to stdout, got {len(chosen)} "
                              f"({', '.join(chosen)}); choose one with --format")
        if sys.stdout is None:
            raise OutputError("--out -: stdout is closed")
        return chosen
    targets = _targets(out_dir, chosen, name, pdf)
    directories = [str(path) for path in targets if os.path.isdir(path)]
    if directories:
        raise OutputError(f"{', '.join(directories)}: is a directory; remove it or choose another --out")
    existing = [str(path) for path in targets if _exists(path)]
    if existing and not force:
        raise OutputError(f"{', '.join(existing)} already exist(s); use --force to overwrite")
    return chosen


def write_outputs(derivation, report, formats: str, out_dir: str, *, force: bool = False, lang: str = "en",
                  batch: int = 64, options=None, name: str = DEFAULT_NAME, pdf: bool = False, progress=None):
    """Render every chosen format, then write them all; return the paths written.

    ``batch`` is the batch size of the memory table in the lecture formats; ``options`` (a
    ``lecture.LectureOptions``) the lecturer's choices; ``name`` the files' base name. With ``pdf``, each
    LaTeX format is also compiled (pdflatex twice, in a scratch directory) and its PDF written with the rest;
    ``progress`` (a function of one line), where given, hears of each pdflatex pass as it starts.
    ``out_dir`` ``-`` prints the one chosen format on stdout instead (and returns no path). Every file is
    rendered before any is written and staged in a temporary file beside its target. Without ``force``
    each staged file is then hard-linked to its target, which fails if anything is there: the check and
    the write are one step, so a run started at the same time cannot slip in between, and on a refusal
    the targets this run had already claimed are removed again (all or nothing). With ``force`` each staged
    file is renamed over its target. Either way a target is never seen half-written.
    """
    from .rendering import render

    chosen = check_targets(formats, out_dir, force=force, name=name, pdf=pdf)
    texts = [render(derivation, fmt, lang=lang, report=report, batch=batch, options=options) for fmt in chosen]
    if out_dir == STDOUT:
        write_stream(texts[0])
        return []
    if pdf:
        texts += [compile_pdf(text, file_name(fmt, name), progress) for fmt, text in zip(chosen, texts)
                  if fmt in TEX_FORMATS]
    directory = Path(out_dir)
    targets = _targets(out_dir, chosen, name, pdf)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"--out: cannot create {directory}: {reason(error)}") from None
    staged = []
    try:
        for path, text in zip(targets, texts):
            staged.append(_stage(path, text))
        if force:
            for temporary, path in zip(staged, targets):
                os.replace(temporary, path)
        else:
            _claim(staged, targets)
    except BaseException as error:
        for temporary in staged:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputError(f"cannot write to {directory}: {reason(error)}") from None
        raise
    return [str(path) for path in targets]


def write_stream(text: str, *, err: bool = False) -> None:
    """Write ``text`` to stdout (or stderr) and flush. A closed or failing stream (a full device, a closed
    pipe) is an OutputError; the failing stream is then pointed at the null device, so that Python's own
    flush at exit stays quiet."""
    name = "stderr" if err else "stdout"
    stream = getattr(sys, name)
    if stream is None:
        raise OutputError(f"cannot write to {name}: it is closed")
    try:
        stream.write(text)
        stream.flush()
    except OSError as error:
        _discard(stream)
        raise OutputError(f"cannot write to {name}: {reason(error)}") from None


def check_file(path, option: str = "") -> Path:
    """Where :func:`write_file` would write ``path``, after refusing what it could not write: call it before
    any slow work (``option``, such as ``--csv``, names the file in messages).

    A new file in an existing folder, a regular file, or a symbolic link to one (written through: the link
    stays, the file it points at gets the new text) is returned, links resolved; a directory, a device, a
    FIFO, a socket, a dangling or looping link, a folder that is missing or cannot be written in is an
    OutputError, so that nothing but a regular file is ever replaced.
    """
    name = os.fsdecode(path)
    where = f"{option} {name}" if option else name
    if not name:
        raise OutputError(f"{option or 'file name'}: empty file name")
    link, mode = False, None
    try:
        link = stat.S_ISLNK(os.lstat(name).st_mode)
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        if link:
            raise OutputError(f"{where}: is a symbolic link to nothing (dangling); remove it or name another "
                              "file") from None
    except NotADirectoryError:
        raise OutputError(f"{where}: a part of the path is not a folder") from None
    except (OSError, ValueError) as error:
        raise OutputError(f"{where}: cannot be written ({reason(error)})") from None
    what = None if mode is None else not_regular(mode)
    if what is not None:
        via = " (through a symbolic link)" if link else ""
        raise OutputError(f"{where}: {what}{via}, not a regular file; name a file to write")
    target = Path(os.path.realpath(name)) if link else Path(name)
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"{where}: the folder {folder} does not exist")
    try:  # can a file be made there (permissions, a read-only file system)?
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(f"{where}: cannot be written in {folder} ({reason(error)})") from None
    return target


def write_file(path, text: str, option: str = "") -> None:
    """Write one file whole or not at all (staged beside it, then renamed over it); OutputError if it cannot be.

    Only what :func:`check_file` accepts is written, checked again here: a symbolic link to a regular file is
    written through, a device, a FIFO or a dangling link is refused, never replaced."""
    target = check_file(path, option)
    temporary = None
    try:
        temporary = _stage(target, text)
        os.replace(temporary, target)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputError(f"{option + ' ' if option else ''}{os.fsdecode(path)}: cannot be written "
                              f"({reason(error)})") from None
        raise


def _discard(stream) -> None:
    """Point ``stream``'s file descriptor at the null device (where it has one)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass


def _targets(out_dir: str, chosen: list[str], name: str, pdf: bool) -> list[Path]:
    """The files a run writes: one per format, then a PDF per LaTeX format when asked for."""
    files = [file_name(fmt, name) for fmt in chosen]
    if pdf:
        files += [file_name(fmt, name, ".pdf") for fmt in chosen if fmt in TEX_FORMATS]
    return [Path(out_dir) / file for file in files]


def compile_pdf(tex: str, file: str, progress=None) -> bytes:
    """The PDF of a LaTeX document (``file``: its name), compiled twice by pdflatex in a scratch directory
    (no shell escape), so nothing but the PDF reaches the output directory; ``progress`` hears of each pass."""
    stem = file.rsplit(".", 1)[0]
    with tempfile.TemporaryDirectory(prefix="symbackprop-pdf-") as work:
        Path(work, file).write_text(tex, encoding="utf-8")
        for run in range(1, 3):
            if progress is not None:
                progress(f"compiling {file} with pdflatex (pass {run} of 2)")
            try:
                result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                                         "-no-shell-escape", file], cwd=work, capture_output=True,
                                        timeout=PDF_TIMEOUT, check=False)
            except subprocess.TimeoutExpired:
                raise OutputError(f"--pdf: pdflatex took more than {PDF_TIMEOUT} s on {file}") from None
            if result.returncode != 0:
                log = Path(work, f"{stem}.log").read_text("utf-8", errors="replace")
                first = next((line for line in log.splitlines() if line.startswith("!")), "see its log")
                raise OutputError(f"--pdf: pdflatex failed on {file}: {first.lstrip('! ')}")
        return Path(work, f"{stem}.pdf").read_bytes()


def _exists(path: Path) -> bool:
    """Whether anything is at ``path``, a dangling symbolic link included; a path that cannot be looked up
    (a name too long, a permission denied) is an OutputError."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, ValueError) as error:
        raise OutputError(f"--out: cannot use {path}: {reason(error)}") from None
    return True


def _claim(staged: list[str], targets: list[Path]) -> None:
    """Put each staged file at its target, refusing any target that exists; all targets or none.

    A hard link fails when its name exists (as ``O_EXCL`` does), so no other run can take a target between
    the check and the write. On a file system without hard links the name is claimed with an exclusive
    create and the staged file renamed over it.
    """
    placed = []  # (target, its identity) for each target this run put in place
    try:
        for temporary, path in zip(staged, targets):
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise OutputError(f"{path} already exists (written by another run meanwhile?); use --force "
                                  "to overwrite") from None
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                _create_exclusive(path)
                os.replace(temporary, path)
            placed.append((path, _identity(path)))
    except BaseException:
        for path, identity in placed:
            if _identity(path) == identity:
                path.unlink(missing_ok=True)
        raise
    for temporary in staged:
        Path(temporary).unlink(missing_ok=True)


def _create_exclusive(path: Path) -> None:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise OutputError(f"{path} already exists (written by another run meanwhile?); use --force to "
                          "overwrite") from None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _stage(path: Path, text: str | bytes) -> str:
    """Write ``text`` (or bytes: a PDF) to a temporary file beside ``path`` (same file system, so the rename
    is atomic).

    The file gets the mode the target has, or for a new file the mode ``open`` would give (0666 less the
    umask), not mkstemp's private 0600.
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (os.fdopen(fd, "wb") if isinstance(text, bytes) else
              os.fdopen(fd, "w", encoding="utf-8", newline="\n")) as handle:
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

