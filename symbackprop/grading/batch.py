"""Grade a whole class: the submissions in files and folders, in parallel, summarised for a course platform.

A folder holds submissions: each ``.py`` file and ``.ipynb`` notebook directly in it is one, and so is each
sub-folder with exactly one such file at its top (a student's folder as platforms download them). Every
submission runs in its own process and scratch directory (``runner.py``); the summaries are a table, JSON, a
CSV file (one row per submission, one column per gradient) and Gradescope's ``results.json``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputError, SymbackpropError, one_line
from .grader import SUFFIXES, GradeError
from .report import Grade
from .runner import stop_all


@dataclass(frozen=True)
class Submission:
    """One submission's outcome: its ``grade``, or why it could not be graded (``error``)."""

    file: str
    grade: Grade | None = None
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.grade is not None and self.grade.ok

    def to_dict(self) -> dict:
        graded = self.grade.to_dict() if self.grade is not None else {"gradients": [], "score": None, "notes": []}
        return {"file": self.file, **graded, "error": self.error or None}


def submissions(paths) -> list[tuple[str, Path | str]]:
    """(name, file) for every submission the paths name, in order; the file is a message where a folder of a
    student's holds no submission or several."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append((str(path), path))
            continue
        for entry in sorted(path.iterdir()):
            if entry.name.startswith(".") or entry.name == "__pycache__":
                continue
            if entry.is_dir():
                candidates = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix in SUFFIXES)
                if len(candidates) == 1:
                    found.append((str(candidates[0]), candidates[0]))
                elif candidates:
                    names = ", ".join(p.name for p in candidates)
                    found.append((str(entry), f"the folder holds several files to grade ({names}); leave one"))
            elif entry.suffix in SUFFIXES:
                found.append((str(entry), entry))
    return found


def check_outputs(outputs: dict, paths, spec_path=None) -> None:
    """Refuse, before any grading, an output file (``outputs``: option -> path, None where not asked for) that
    could not be written (see ``output.check_file``), that two options name, or that would replace a file the
    run reads: a submission (a .py or .ipynb file the paths name or a folder of them holds, a student's folder
    with several included) or the spec. OutputError (exit code 2) naming the option."""
    from ..output import check_file

    reads = {}
    for path in [*_files_read(paths), *([spec_path] if spec_path else [])]:
        identity = _identity(path)
        if identity is not None:
            reads.setdefault(identity, str(path))
    outputs = {option: path for option, path in outputs.items() if path is not None}
    written = {}
    for option, path in outputs.items():  # links followed: a link to a submission is that submission
        identity = _identity(path) or ("new", os.path.realpath(path))
        if identity in reads:
            what = "the spec" if spec_path and reads[identity] == str(spec_path) else "a submission"
            raise OutputError(f"{option} {path}: is {what} this run reads ({reads[identity]}); "
                              "name another file to write")
        if identity in written:
            raise OutputError(f"{option} {path}: {written[identity]} names the same file; name two files")
        written[identity] = option
    for option, path in outputs.items():
        check_file(path, option)


def _files_read(paths) -> list[Path]:
    """Every file a class's submissions may be: the files the paths name, and the .py and .ipynb files a folder
    holds, at its top and at the top of each sub-folder."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append(path)
            continue
        for entry in _listing(path):
            found += [p for p in _listing(entry) if p.suffix in SUFFIXES] if entry.is_dir() else [entry]
    return [file for file in found if file.suffix in SUFFIXES]


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _identity(path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def grade_all(grader, paths, function: str = "backward", jobs: int = 1, progress=None) -> list[Submission]:
    """Grade every submission ``paths`` name with ``grader``, ``jobs`` at a time; one outcome each, in order.

    A submission that cannot be graded (not a notebook, a folder with several files) is an outcome with an
    error, never an exception: one bad submission does not stop a class. ``progress(done, total)`` is called
    as submissions finish."""
    found = submissions(paths)
    done = 0

    def one(item) -> Submission:
        nonlocal done
        name, path = item
        start = time.perf_counter()
        if isinstance(path, str):
            outcome = Submission(name, error=path)
        else:
            try:
                outcome = Submission(name, grader.grade(path, function), seconds=time.perf_counter() - start)
            except SymbackpropError as error:
                outcome = Submission(name, error=one_line(str(error)))
            except Exception as error:  # noqa: BLE001 - a fault of the grader's on one file must not end a class
                outcome = Submission(name, error=one_line(f"the grader failed on this submission "
                                                          f"({type(error).__name__}: {error}); please report it"))
        done += 1
        if progress is not None:
            progress(done, len(found))
        return outcome

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = [pool.submit(one, item) for item in found]
    try:
        outcomes = [future.result() for future in futures]
    except BaseException:  # Ctrl-C or SIGTERM: no new submission starts, the running ones are stopped
        pool.shutdown(wait=False, cancel_futures=True)
        while any(future.running() for future in futures):
            stop_all()
            time.sleep(0.02)
        raise
    pool.shutdown()
    return outcomes


def table(outcomes, order) -> str:
    """The terminal summary: one line per submission (score, and the wrong gradients), then the totals."""
    width = max([len("submission"), *(len(o.file) for o in outcomes)])
    lines = [f"{'submission':<{width}}  score  wrong"]
    for outcome in outcomes:
        if outcome.grade is None:
            lines.append(f"{outcome.file:<{width}}  {'-':>5}  not graded: {outcome.error}")
            continue
        wrong = [g for g in outcome.grade.gradients if not g.ok]
        shown = ", ".join(g.name for g in wrong) if wrong else "-"
        if len(wrong) == len(outcome.grade.gradients) > 1 and len({g.reason for g in wrong}) == 1:
            shown = f"all: {_shortened(wrong[0].reason)}"  # the file did not load, crashed, timed out, ...
        lines.append(f"{outcome.file:<{width}}  {outcome.grade.score:>5}  {shown}")
    graded = [o for o in outcomes if o.grade is not None]
    lines.append(f"{len(outcomes)} submissions: {sum(o.ok for o in graded)} all correct, "
                 f"{len(graded) - sum(o.ok for o in graded)} with wrong gradients, "
                 f"{len(outcomes) - len(graded)} not graded (gradients: {', '.join(order)})")
    return "\n".join(lines)


def _shortened(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def csv_text(outcomes, order) -> str:
    """One row per submission: file, correct, total, one column per gradient (correct, wrong, or empty where
    not graded), error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "correct", "total", *order, "error"])
    for outcome in outcomes:
        verdicts = {g.name: g.verdict for g in outcome.grade.gradients} if outcome.grade is not None else {}
        correct = sum(v == "correct" for v in verdicts.values())
        writer.writerow([outcome.file, correct if verdicts else "", len(verdicts) if verdicts else "",
                         *(verdicts.get(name, "") for name in order), outcome.error])
    return buffer.getvalue()


def gradescope(outcome: Submission) -> dict:
    """Gradescope's autograder ``results.json`` for one submission: one test per gradient (1 point each), its
    message as the test's output, and the grader's context and notes as the overall output."""
    if outcome.grade is None:
        return {"score": 0, "output": f"The submission could not be graded: {outcome.error}", "tests": []}
    tests = []
    for number, verdict in enumerate(outcome.grade.gradients, start=1):
        tests.append({"name": f"d{verdict.name}", "number": str(number), "score": int(verdict.ok), "max_score": 1,
                      "status": "passed" if verdict.ok else "failed",
                      "output": "correct" if verdict.ok else verdict.text()})
    output = "\n".join([*outcome.grade.context, *(f"note: {n}" for n in outcome.grade.notes),
                        f"{outcome.grade.score} gradients correct"])
    return {"score": sum(t["score"] for t in tests), "execution_time": round(outcome.seconds, 3),
            "output": output, "tests": tests}


def json_text(outcomes) -> str:
    return json.dumps([o.to_dict() for o in outcomes], indent=2, ensure_ascii=False)


def check_jobs(jobs: int) -> None:
    if not 1 <= jobs <= 256:
        raise GradeError(f"--jobs must be a number of parallel submissions from 1 to 256, not {jobs}")
