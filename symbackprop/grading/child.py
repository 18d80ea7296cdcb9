"""The student's side of grading: run their function on the grader's instances, in a process of its own.

The grader starts this file as a script (``python -I child.py FILE FUNCTION SIGNATURE TIME_LIMIT RESULTS_FD``)
in an empty scratch directory, and writes the instances to its standard input as frames (``write_frame``). The
script reads them all before the student's file is loaded, then writes one frame per call to the pipe
``RESULTS_FD`` (what the call returned or raised, with the returned arrays as raw float64), or one ``load``
frame when the file cannot be loaded. The first frame on standard input says what to run: the file itself, or
a notebook's code cells joined into one source. No file of the scratch directory is read or written: the student's code
cannot remove, replace or block what the grader reads, and a file-size limit on its writes does not limit the
results. Only the standard library and NumPy are imported, all of them before the student's folder is on the
import path (a student's ``threading.py`` or ``zipfile.py`` cannot stand in for them), nothing the student's
code returns is pickled, and every call has a time limit. This is a guard against mistakes, not a security
sandbox.
"""

import importlib.util
import io
import json
import linecache
import os
import signal
import struct
import sys
import traceback
from pathlib import Path

import numpy as np

MEMORY_LIMIT = 2 << 30  # bytes of address space
FILE_SIZE_LIMIT = 64 << 20  # bytes in any one file the student's code writes
PROCESS_LIMIT = 64  # processes the student's code may start (where the platform counts them per process tree)
REPEAT = 0.05  # seconds between alarms once a call is past its time limit
_LENGTH = struct.Struct("<Q")
# Taken before the student's code runs, which may replace them in their modules (np.savez, json.dumps, ...).
_dumps, _loads, _float64 = json.dumps, json.loads, np.array
CELLS = []  # a notebook's code cells: (first line in the joined source, cell number), for error messages


def write_frame(write, header: dict, arrays=()) -> None:
    """One frame: the header's JSON length, the JSON (with each array's dtype and shape), the arrays' bytes."""
    header = {**header, "arrays": [[array.dtype.str, list(array.shape)] for array in arrays]}
    text = _dumps(header).encode()
    write(_LENGTH.pack(len(text)) + text)
    for array in arrays:
        write(array.tobytes())  # C order, whatever the array's strides


def read_frames(data) -> tuple[list, int]:
    """The complete frames at the start of ``data`` (bytes), as (header, arrays), and how many bytes they take
    (less than ``len(data)`` when a frame is cut short, or the bytes are not frames)."""
    frames, view, at = [], memoryview(data), 0
    while at + _LENGTH.size <= len(view):
        (length,) = _LENGTH.unpack_from(view, at)
        start = at + _LENGTH.size + length
        if start > len(view):
            break
        header = _loads(bytes(view[at + _LENGTH.size:start]))
        arrays = []
        for dtype, shape in header["arrays"]:
            dtype = np.dtype(dtype)
            size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
            if start + size > len(view):
                return frames, at
            arrays.append(np.frombuffer(view[start:start + size], dtype=dtype).reshape(shape).copy())
            start += size
        frames.append((header, arrays))
        at = start
    return frames, at


class TimeLimit(BaseException):
    """Raised inside the student's code when a call runs past its time limit (not an ``Exception``, so a
    student's ``except Exception`` cannot swallow it)."""


class Silenced(io.TextIOBase):
    """Stands in for sys.stdout and sys.stderr: what the student's code prints is dropped (the grader reports
    verdicts, not output, and a print in a loop must not fill a pipe or a disk)."""

    def writable(self):
        return True

    def write(self, text):
        return len(text)


def limit_resources():
    """Cap memory, file sizes and processes where the platform allows it (no effect elsewhere)."""
    try:
        import resource
    except ImportError:
        return
    limits = [(resource.RLIMIT_AS, MEMORY_LIMIT), (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)]
    if hasattr(resource, "RLIMIT_NPROC") and os.getuid() != 0:  # counted per user: root is not limited
        limits.append((resource.RLIMIT_NPROC, PROCESS_LIMIT + _processes_of_user()))
    for kind, value in limits:
        _, hard = resource.getrlimit(kind)
        if hard == resource.RLIM_INFINITY or hard > value:
            try:
                resource.setrlimit(kind, (value, hard))
            except (ValueError, OSError):
                pass


def _processes_of_user() -> int:
    """How many processes this user runs now (Linux; 0 where /proc cannot tell)."""
    try:
        uid = os.getuid()
        return sum(1 for entry in os.scandir("/proc") if entry.name.isdigit() and entry.stat().st_uid == uid)
    except OSError:
        return 0


def timed(limit, call, *args):
    """``call(*args)``, interrupted by TimeLimit after ``limit`` seconds where the platform has SIGALRM.

    The alarm repeats every REPEAT seconds after that, so code that catches the first one (a bare
    ``except:`` in a loop) is interrupted again until it lets one through.
    """
    if not hasattr(signal, "setitimer"):
        return call(*args)

    def stop(signum, frame):
        raise TimeLimit

    signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, limit, REPEAT)
    try:
        return call(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def describe(error, path):
    """One line for an exception: its type, the line of the student's file it came from, its message."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == path]
    where = ""
    if frames:
        frame = frames[-1]
        where = f" at {line_words(frame.lineno)}" + (f" ({frame.line.strip()})" if frame.line else "")
    if isinstance(error, SyntaxError) and error.filename == path:
        where = f" at {line_words(error.lineno)}"
    try:
        message = str(error) if not isinstance(error, SyntaxError) else error.msg
    except BaseException:  # noqa: BLE001 - a student's exception class may fail to print
        message = "(its message cannot be printed)"
    return f"{type(error).__name__}{where}" + (f": {message}" if message else "")


def line_words(number) -> str:
    """``line 12``, or in a notebook ``cell 3, line 2``."""
    cell = next(((first, cell) for first, cell in reversed(CELLS) if first <= number), None)
    return f"line {number}" if cell is None else f"cell {cell[1]}, line {number - cell[0] + 1}"


def load(path, function, limit, source=None):
    """The student's function, or a dict saying why there is none. ``source``: a notebook's code cells joined
    (``path`` names the notebook), run as the module's code."""
    if source is None:
        module_spec = importlib.util.spec_from_file_location("student", path)
        module = importlib.util.module_from_spec(module_spec)
        run = module_spec.loader.exec_module
    else:
        module = type(sys)("student")
        module.__file__ = path
        linecache.cache[path] = (len(source), None, source.splitlines(True), path)  # lines for tracebacks

        def run(module):
            exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - the student's code, in its process
    sys.modules["student"] = module
    try:
        timed(limit, run, module)
    except TimeLimit:
        return {"problem": f"loading the file took longer than {limit:g} s"}
    except BaseException as error:  # noqa: BLE001 - the student's file may raise anything, SystemExit too
        return {"problem": f"loading the file raised {describe(error, path)}"}
    fn = getattr(module, function, None)
    if not callable(fn):
        defined = sorted(name for name, value in vars(module).items()
                         if callable(value) and getattr(value, "__module__", None) == "student")
        listed = ", ".join(defined) if defined else "none"
        return {"problem": f"the file defines no function {function} (functions it defines: {listed})"}
    return fn


def value_entry(value, arrays):
    """How one returned value is reported: an array (appended to ``arrays``) or the reason it is not one."""
    if not isinstance(value, (np.ndarray, np.generic, int, float)) or isinstance(value, (bool, np.bool_)):
        return {"problem": f"a {type(value).__name__}, not a NumPy array"}
    dtype = np.asarray(value).dtype
    if dtype.kind not in "biuf":
        return {"problem": f"an array of dtype {dtype}, not of real numbers"}
    arrays.append(_float64(value, dtype=np.float64))
    return {"array": len(arrays) - 1, "dtype": str(dtype)}


def call(fn, arguments, limit, path):
    """Call the student's function once: the result's description and its arrays."""
    arrays = []
    try:
        result = timed(limit, fn, *arguments)
    except TimeLimit:
        return {"status": "timeout"}, arrays
    except BaseException as error:  # noqa: BLE001 - whatever the student's code raises is reported
        return {"status": "error", "error": describe(error, path)}, arrays
    try:
        if not isinstance(result, dict):
            return {"status": "not a dict", "error": type(result).__name__}, arrays
        values = {key: value_entry(value, arrays) for key, value in dict(result).items() if isinstance(key, str)}
        others = [repr(key)[:80] for key in result if not isinstance(key, str)]
    except BaseException as error:  # noqa: BLE001 - a dict subclass of the student's may raise anywhere
        return {"status": "error", "error": f"its result could not be read: {describe(error, path)}"}, []
    return {"status": "ok", "values": values, "other_keys": others}, arrays


def arguments_of(instance, signature):
    """The arguments of one call, from an instance frame's header and arrays (fresh copies for each call)."""
    header, arrays = instance
    named = {name: array.copy() for name, array in zip(header["names"], arrays)}
    params = {name[7:]: value for name, value in named.items() if name.startswith("params/")}
    cache = {name[6:]: value for name, value in named.items() if name.startswith("cache/")}
    if signature == "gradients":
        return params, named["input"], named["Y_true"]
    if signature == "cache":  # a forward pass written as code: backward(cache), as the generated module's
        return (cache,)
    return params, cache, named["Y_true"]


def main(argv):
    path, function, signature, limit, results = argv[1], argv[2], argv[3], float(argv[4]), int(argv[5])
    os.set_inheritable(results, False)  # programs the student's code starts do not get the results pipe
    send = os.fdopen(results, "wb", buffering=0).write
    frames, _ = read_frames(sys.stdin.buffer.read())
    sys.stdin.close()
    header, _ = frames[0]
    source, instances = header.get("source"), frames[1:]
    CELLS.extend(map(tuple, header.get("cells", ())))
    path = str(Path(path).resolve())
    limit_resources()
    sys.path.insert(0, str(Path(path).parent))  # as `python FILE` would, so the student's own imports work
    sys.stdout = sys.stderr = Silenced()
    fn = load(path, function, limit, source)
    if isinstance(fn, dict):
        write_frame(send, {"load": fn["problem"]})
        return
    for instance in instances:
        entry, arrays = call(fn, arguments_of(instance, signature), limit, path)
        write_frame(send, entry, arrays)
        if entry["status"] == "timeout":  # a function that hung once would hang again: stop here
            return


if __name__ == "__main__":
    try:
        main(sys.argv)
    except BaseException:
        sys.stderr = sys.__stderr__  # a failure of this script itself is for the grader to see
        raise
