"""The student's side of grading: run their function on the grader's instances, in a process of its own.

The grader starts this file as a script (``python -I child.py FILE FUNCTION SIGNATURE TIME_LIMIT COUNT``) in a
temporary working directory that holds ``instance-<i>.npz``; it writes ``result-<i>.json`` (what each call
returned or raised) and ``result-<i>.npz`` (the returned arrays as float64), and ``load.json`` when the file
cannot be loaded. Only the standard library and NumPy are imported, nothing the student's code returns is
pickled, and every call has a time limit. This is a guard against mistakes, not a security sandbox.
"""

import importlib.util
import io
import json
import signal
import sys
import traceback
from pathlib import Path

import numpy as np

MEMORY_LIMIT = 2 << 30  # bytes of address space
FILE_SIZE_LIMIT = 64 << 20  # bytes in any one file the process writes
REPEAT = 0.05  # seconds between alarms once a call is past its time limit


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
    """Cap memory and file sizes where the platform allows it (no effect elsewhere)."""
    try:
        import resource
    except ImportError:
        return
    for kind, value in ((resource.RLIMIT_AS, MEMORY_LIMIT), (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)):
        _, hard = resource.getrlimit(kind)
        if hard == resource.RLIM_INFINITY or hard > value:
            try:
                resource.setrlimit(kind, (value, hard))
            except (ValueError, OSError):
                pass


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
        where = f" at line {frame.lineno}" + (f" ({frame.line.strip()})" if frame.line else "")
    if isinstance(error, SyntaxError) and error.filename == path:
        where = f" at line {error.lineno}"
    message = str(error) if not isinstance(error, SyntaxError) else error.msg
    return f"{type(error).__name__}{where}" + (f": {message}" if message else "")


def load(path, function, limit):
    """The student's function, or a dict saying why there is none."""
    module_spec = importlib.util.spec_from_file_location("student", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["student"] = module
    try:
        timed(limit, module_spec.loader.exec_module, module)
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


def value_entry(value, name, arrays):
    """How one returned value is reported: an array (stored in ``arrays``) or the reason it is not one."""
    if not isinstance(value, (np.ndarray, np.generic, int, float)) or isinstance(value, (bool, np.bool_)):
        return {"problem": f"a {type(value).__name__}, not a NumPy array"}
    dtype = np.asarray(value).dtype
    if dtype.kind not in "biuf":
        return {"problem": f"an array of dtype {dtype}, not of real numbers"}
    array = np.asarray(value, dtype=np.float64)
    arrays[name] = array
    return {"array": name, "dtype": str(dtype), "shape": list(array.shape)}


def call(fn, arguments, limit, path):
    """Call the student's function once: the result's description and its arrays."""
    arrays = {}
    try:
        result = timed(limit, fn, *arguments)
    except TimeLimit:
        return {"status": "timeout"}, arrays
    except BaseException as error:  # noqa: BLE001 - whatever the student's code raises is reported
        return {"status": "error", "error": describe(error, path)}, arrays
    if not isinstance(result, dict):
        return {"status": "not a dict", "error": type(result).__name__}, arrays
    values = {}
    for index, (key, value) in enumerate(result.items()):
        if isinstance(key, str):
            values[key] = value_entry(value, f"v{index}", arrays)
    others = [repr(key) for key in result if not isinstance(key, str)]
    return {"status": "ok", "values": values, "other_keys": others}, arrays


def instance_arguments(path, signature):
    """The arguments of one call, read from the instance file the grader wrote."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    params = {name[7:]: value for name, value in arrays.items() if name.startswith("params/")}
    cache = {name[6:]: value for name, value in arrays.items() if name.startswith("cache/")}
    if signature == "gradients":
        return params, arrays["input"], arrays["Y_true"]
    return params, cache, arrays["Y_true"]


def main(argv):
    path, function, signature, limit, count = argv[1], argv[2], argv[3], float(argv[4]), int(argv[5])
    path = str(Path(path).resolve())
    workdir = Path.cwd()  # absolute, in case the student's code changes directory
    limit_resources()
    sys.path.insert(0, str(Path(path).parent))  # as `python FILE` would, so the student's own imports work
    sys.stdout = sys.stderr = Silenced()
    fn = load(path, function, limit)
    if isinstance(fn, dict):
        (workdir / "load.json").write_text(json.dumps(fn))
        return
    for index in range(count):
        arguments = instance_arguments(workdir / f"instance-{index}.npz", signature)
        entry, arrays = call(fn, arguments, limit, path)
        np.savez(workdir / f"result-{index}.npz", **arrays)
        (workdir / f"result-{index}.json").write_text(json.dumps(entry))
        if entry["status"] == "timeout":  # a function that hung once would hang again: stop here
            return


if __name__ == "__main__":
    try:
        main(sys.argv)
    except BaseException:
        sys.stderr = sys.__stderr__  # a failure of this script itself is for the grader to see
        raise
