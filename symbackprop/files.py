"""Reading files a user names (specs, claims): regular files only, at most ``MAX_INPUT_BYTES``, UTF-8 text.

A device (``/dev/zero``), a FIFO or a directory is refused at once instead of read until memory runs out
or waited on forever; a larger file is refused before it is read. Every failure is an
:class:`~symbackprop.errors.InputFileError` naming the file and the reason.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from .errors import InputFileError

MAX_INPUT_BYTES = 1 << 20  # 1 MiB: far more than any spec or list of claims needs
_CHUNK = 1 << 16

_NOT_REGULAR = ((stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "is a FIFO (a pipe)"),
                (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"),
                (stat.S_ISSOCK, "is a socket"))


def not_regular(mode: int) -> str | None:
    """What a file of ``mode`` (``st_mode``) is, in words (``is a FIFO (a pipe)``), unless it is a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _NOT_REGULAR if test(mode)), "is a special file")


def _limit_text(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"


def read_bytes(path: str | os.PathLike, *, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of the regular file at ``path``, refused when it is larger than ``limit``.

    The file is opened without blocking (a FIFO with no writer cannot hang the open) and checked with
    ``fstat`` on the open descriptor, so what is read is what was checked.
    """
    name = os.fsdecode(path)
    if not name:
        raise InputFileError("''", "empty file name")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputFileError(name, "file not found") from None
    except (OSError, ValueError) as error:
        raise InputFileError(name, f"cannot open: {reason(error)}") from None
    try:
        what = not_regular(os.fstat(fd).st_mode)
        if what is not None:
            raise InputFileError(name, f"{what}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return read_limited(handle, name, limit=limit)
    except OSError as error:
        raise InputFileError(name, f"cannot read: {reason(error)}") from None
    finally:
        os.close(fd)


def read_limited(handle: BinaryIO, name: str, *, limit: int = MAX_INPUT_BYTES) -> bytes:
    """At most ``limit`` bytes from an open binary stream (a file or stdin); more is an InputFileError."""
    chunks, size = [], 0
    while size <= limit:
        chunk = handle.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise InputFileError(name, f"larger than {_limit_text(limit)}, the limit for input files")


def decode_text(data: bytes, name: str) -> str:
    """``data`` as UTF-8 text (a byte-order mark is dropped); other bytes are an InputFileError that says where."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise InputFileError(name, f"not UTF-8 text ({error.reason} at byte {error.start}: 0x{data[error.start]:02x} "
                                   f"at line {line}, column {column})") from None


def read_text(path: str | os.PathLike, *, limit: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of the regular file at ``path``, at most ``limit`` bytes (see :func:`read_bytes`)."""
    return decode_text(read_bytes(path, limit=limit), os.fsdecode(path))


def reason(error: Exception) -> str:
    """Why an operating-system call failed, in its own words (``No such file or directory``)."""
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)
