"""Run a student's file on the grading instances, in a separate Python process (the script ``child.py``).

The process is ``sys.executable -I -B`` (isolated: no user site-packages, no PYTHON* variables; no bytecode
written beside the student's file) in an empty scratch directory of its own, in a process group of its own,
with NumPy's thread pools at one thread and a time limit per call enforced inside the process. Instances go to it over its standard input and results come back
over a pipe (``child.py`` has the format), never through files the student's code could remove, replace or
block. Whatever happens (normal end, deadline, Ctrl-C, SIGTERM to the grader), the whole process group is killed
and the scratch directory removed before ``run_student`` returns or raises.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import one_line
from .child import read_frames, write_frame

CHILD = Path(__file__).with_name("child.py")
STARTUP_SECONDS = 10.0  # allowance for starting Python and importing NumPy on a busy machine
STDERR_SHOWN = 2000  # bytes of the process's own error output kept (the last ones) for a report
RESULTS_LIMIT = 2 << 30  # bytes of results read back; a run that sends more is stopped
DRAIN_SECONDS = 1.0  # after the process ends, how long to wait for the pipes' last bytes
_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_RUNNING, _RUNNING_LOCK = set(), threading.Lock()  # the children running now, for stop_all


@dataclass(frozen=True)
class Call:
    """What one call of the student's function gave: ``status`` is ``ok``, ``error`` (``error`` says what it
    raised), ``timeout`` or ``not a dict`` (``error`` names the type it returned).

    ``arrays`` holds the returned values that are arrays of real numbers (as float64), ``problems`` says why
    the other returned values are not, ``dtypes`` is each array's own dtype and ``keys`` every string key the
    returned dict has, in order.
    """

    status: str
    error: str = ""
    arrays: dict = field(default_factory=dict)
    problems: dict = field(default_factory=dict)
    dtypes: dict = field(default_factory=dict)
    keys: tuple = ()
    other_keys: tuple = ()


@dataclass(frozen=True)
class Run:
    """One run of a student's file: why it could not be loaded (or ""), and each instance's call.

    A call is None when it was not made: an earlier call timed out, or the process ended (``ended`` says how,
    as a phrase about the student's function: "ended its process with exit status 3").
    """

    load_problem: str
    calls: tuple
    ended: str = ""


@dataclass
class _Output:
    """What came back from the process: the results pipe's bytes, the last bytes of its error output."""

    results: bytearray = field(default_factory=bytearray)
    stderr: bytes = b""
    flooded: bool = False


def run_student(path: Path, function: str, signature: str, instances, time_limit: float, source=None) -> Run:
    """Call ``function`` of the file at ``path`` on every instance (``signature``: backward or gradients).

    ``source``: a notebook's code as one Python source, with ``cells`` (see ``notebooks.py``), run in place of
    the file."""
    frames = []
    write_frame(frames.append, {} if source is None else {"source": source.text, "cells": source.cells})
    for instance in instances:
        files = instance.files()
        write_frame(frames.append, {"names": list(files)}, list(files.values()))
    workdir = Path(tempfile.mkdtemp(prefix="symbackprop-grade-"))
    try:
        read, write = os.pipe()
        command = [sys.executable, "-I", "-B", str(CHILD), str(Path(path).resolve()), function, signature,
                   repr(float(time_limit)), str(write)]
        deadline = STARTUP_SECONDS + time_limit * (len(instances) + 1)
        returncode, output = _run(command, workdir, deadline, b"".join(frames), read, write)
        return _collect(output, len(instances), returncode, deadline)
    finally:
        _remove(workdir)


def _run(command, workdir: Path, deadline: float, stdin: bytes = b"", read=None, write=None):
    """Run the child to its end or its deadline, reading its pipes as it runs; then kill its process group
    (what it started included) on every way out. Returns its exit status (None when stopped at the deadline)
    and its output."""
    environment = {**os.environ, **dict.fromkeys(_THREADS, "1")}
    posix = os.name == "posix"
    if read is None:
        read, write = os.pipe()
    output, returncode = _Output(), None
    try:
        process = subprocess.Popen(command, cwd=workdir, env=environment, stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(write,),
                                   start_new_session=posix)
    except BaseException:
        os.close(read)
        os.close(write)
        raise
    os.close(write)
    with _RUNNING_LOCK:
        _RUNNING.add(process)
    feeder = threading.Thread(target=_feed, args=(process.stdin, stdin), daemon=True)
    try:
        feeder.start()
        returncode = _read_until_end(process, read, output, time.monotonic() + deadline)
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(process)
        _kill(process, posix)
        os.close(read)
        process.stderr.close()
        feeder.join(timeout=DRAIN_SECONDS)
    return returncode, output


def stop_all() -> None:
    """Kill every child running now (with what it started): the runs reading them end at once, as at a
    deadline. For a grader interrupted while other threads grade."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for process in running:
        try:
            os.killpg(process.pid, signal.SIGKILL) if os.name == "posix" else process.kill()
        except (ProcessLookupError, PermissionError):
            pass


def _feed(pipe, data: bytes) -> None:
    """Write the instances to the child's standard input (in a thread: the pipe holds less than they take)."""
    try:
        pipe.write(data)
        pipe.close()
    except (OSError, ValueError):  # the child ended, or was killed, before reading them all
        pass


def _read_until_end(process, read, output: _Output, deadline: float) -> int | None:
    """Read the results pipe and the error output until both close after the process ends (or DRAIN_SECONDS
    after it ends, should something it left hold them open), the deadline passes, or the results pass
    RESULTS_LIMIT. The process's exit status, or None when it was still running."""
    errors = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(read, selectors.EVENT_READ, output.results)
        selector.register(process.stderr.fileno(), selectors.EVENT_READ, errors)
        ended_at = None
        while selector.get_map():
            now = time.monotonic()
            if process.poll() is not None and ended_at is None:
                ended_at = now
            if now >= deadline or (ended_at is not None and now - ended_at > DRAIN_SECONDS):
                break
            for key, _ in selector.select(timeout=0.05):
                chunk = os.read(key.fd, 1 << 20)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                key.data.extend(chunk)
                if key.data is errors and len(errors) > STDERR_SHOWN:
                    del errors[:-STDERR_SHOWN]
                if len(output.results) > RESULTS_LIMIT:
                    output.flooded = True
                    return None
    output.stderr = bytes(errors)
    try:  # the pipes close as the process exits: wait for its status (until the deadline, if it lives on)
        return process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None


def _kill(process, posix: bool) -> None:
    """Kill the process and every process of its group (also after a normal end: what it started), and reap it."""
    if posix:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    else:
        process.kill()
    process.wait()


def _remove(workdir: Path) -> None:
    """Remove the scratch directory, whatever the student's code left in it (FIFOs, links, read-only folders)."""
    def writable_then_retry(function, name, _):
        try:
            parent = os.path.dirname(name)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, stat.S_IRWXU)
            function(name)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(workdir, onexc=writable_then_retry)
    else:
        shutil.rmtree(workdir, onerror=writable_then_retry)


def _collect(output: _Output, count: int, returncode: int | None, deadline: float) -> Run:
    try:
        frames, used = read_frames(output.results)
        if frames and "load" in frames[0][0]:
            return Run(one_line(frames[0][0]["load"]), (None,) * count)
        calls = [_call(header, arrays) for header, arrays in frames[:count]]
        # Bytes that are not frames, from a process that ended by itself: the student's code wrote them.
        unreadable = used < len(output.results) and returncode == 0 and not output.flooded
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error):
        calls, unreadable = [], True
    ended = ""
    if len(calls) < count and not (calls and calls[-1].status == "timeout"):
        if unreadable:
            ended = "wrote to the grader's results pipe; its results cannot be read"
        elif output.flooded:
            ended = f"returned more than {RESULTS_LIMIT >> 30} GiB of results; the run was stopped"
        else:
            ended = _ending(returncode, deadline)
        last = output.stderr.decode("utf-8", "replace").strip().splitlines()
        if last:
            ended += f" (its last output: {one_line(last[-1])[:200]})"
    return Run("", tuple(calls) + (None,) * (count - len(calls)), ended)


def _call(entry: dict, saved: list) -> Call:
    if entry["status"] != "ok":
        return Call(entry["status"], one_line(entry.get("error", "")))
    arrays, problems, dtypes = {}, {}, {}
    for key, value in entry["values"].items():
        key = one_line(key)
        if "array" in value:
            arrays[key] = saved[value["array"]]
            dtypes[key] = value["dtype"]
        else:
            problems[key] = one_line(value["problem"])
    return Call("ok", arrays=arrays, problems=problems, dtypes=dtypes, keys=tuple(map(one_line, entry["values"])),
                other_keys=tuple(map(one_line, entry["other_keys"])))


def _ending(returncode: int | None, deadline: float) -> str:
    """How the process ended early, as what the student's function did: "exited with status 3", ..."""
    if returncode is None:
        return f"was stopped at the run's deadline of {deadline:g} s"
    if returncode < 0:
        try:
            return f"ended its process with {signal.Signals(-returncode).name}"
        except ValueError:
            return f"ended its process with signal {-returncode}"
    return f"ended its process with exit status {returncode}"
