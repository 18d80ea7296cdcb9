"""Run a student's file on the grading instances, in a separate Python process (the script ``child.py``).

The process is ``sys.executable -I`` (isolated: no user site-packages, no PYTHON* variables) in a temporary
working directory, with NumPy's thread pools at one thread, a time limit per call enforced inside the process
and a deadline for the whole run enforced here. What comes back is read as JSON and as ``.npz`` files without
pickles.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHILD = Path(__file__).with_name("child.py")
STARTUP_SECONDS = 10.0  # allowance for starting Python and importing NumPy on a busy machine
STDERR_SHOWN = 2000  # bytes of the process's own error output read back when it ends early
_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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


def run_student(path: Path, function: str, signature: str, instances, time_limit: float) -> Run:
    """Call ``function`` of the file at ``path`` on every instance (``signature``: backward or gradients)."""
    with tempfile.TemporaryDirectory(prefix="symbackprop-grade-") as name:
        workdir = Path(name)
        for index, instance in enumerate(instances):
            np.savez(workdir / f"instance-{index}.npz", **instance.files())
        command = [sys.executable, "-I", str(CHILD), str(Path(path).resolve()), function, signature,
                   repr(float(time_limit)), str(len(instances))]
        deadline = STARTUP_SECONDS + time_limit * (len(instances) + 1)
        returncode = _run(command, workdir, deadline)
        return _collect(workdir, len(instances), returncode, deadline)


def _run(command, workdir: Path, deadline: float) -> int | None:
    """Run the child to the end, or kill it (and anything it started) at the deadline: its exit status or None."""
    environment = {**os.environ, **dict.fromkeys(_THREADS, "1")}
    posix = os.name == "posix"
    with open(workdir / "stderr.txt", "wb") as errors:
        process = subprocess.Popen(command, cwd=workdir, env=environment, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=errors, start_new_session=posix)
        try:
            return process.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            if posix:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
            process.wait()
            return None


def _collect(workdir: Path, count: int, returncode: int | None, deadline: float) -> Run:
    load = workdir / "load.json"
    if load.exists():
        return Run(json.loads(load.read_text())["problem"], (None,) * count)
    calls = []
    for index in range(count):
        entry = workdir / f"result-{index}.json"
        if not entry.exists():
            break
        calls.append(_call(json.loads(entry.read_text()), workdir / f"result-{index}.npz"))
    ended = ""
    if len(calls) < count and not (calls and calls[-1].status == "timeout"):
        ended = _ending(returncode, deadline)
        with open(workdir / "stderr.txt", "rb") as errors:
            errors.seek(max(0, errors.seek(0, os.SEEK_END) - STDERR_SHOWN))
            last = errors.read().decode("utf-8", "replace").strip().splitlines()
        if last:
            ended += f" (its last output: {last[-1]})"
    return Run("", tuple(calls) + (None,) * (count - len(calls)), ended)


def _call(entry: dict, arrays_path: Path) -> Call:
    if entry["status"] != "ok":
        return Call(entry["status"], entry.get("error", ""))
    with np.load(arrays_path, allow_pickle=False) as stored:
        saved = {name: stored[name] for name in stored.files}
    arrays, problems, dtypes = {}, {}, {}
    for key, value in entry["values"].items():
        if "array" in value:
            arrays[key] = saved[value["array"]]
            dtypes[key] = value["dtype"]
        else:
            problems[key] = value["problem"]
    return Call("ok", arrays=arrays, problems=problems, dtypes=dtypes, keys=tuple(entry["values"]),
                other_keys=tuple(entry["other_keys"]))


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
