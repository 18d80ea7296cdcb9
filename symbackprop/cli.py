"""The command line: ``symbackprop derive | verify | check | grade``, a thin layer over the pipeline.

Exit codes: 0 success, 1 a verification failed (or a checked claim or graded gradient is wrong), 2 bad usage
or input. Errors, usage errors included, print one line on stderr; ``--debug`` shows the traceback. SymPy is
imported only inside commands, after the cheap checks (``derive`` refuses existing outputs first), so refusals
and ``symbackprop --help`` stay fast.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time

import click

from .errors import SymbackpropError, allowed, one_line

DEFAULT_FORMATS = "md,tex,py"
PROG = "symbackprop"


def _error_line(message: str) -> str:
    return f"{PROG}: error: {one_line(message)}"


class _OneLineUsageError(click.UsageError):
    """A click usage error shown as one line on stderr, naming the help to read."""

    def show(self, file=None) -> None:
        command = self.ctx.command_path if self.ctx else PROG
        click.echo(_error_line(f"{self.format_message()} (see '{command} --help')"), err=True, file=file)


def _one_line_usage(error: click.UsageError) -> _OneLineUsageError:
    return _OneLineUsageError(error.format_message(), error.ctx)


class _Group(click.Group):
    """Maps our errors to exit codes and one line on stderr, unless --debug asks for the traceback."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as error:
            raise _one_line_usage(error) from None

    def invoke(self, ctx):
        try:
            try:
                with _sigterm_unwinds():
                    return super().invoke(ctx)
            finally:
                _flush_stdout()
        except KeyboardInterrupt as error:
            click.echo(_error_line(f"interrupted{' (SIGTERM)' if isinstance(error, _Terminated) else ''}; "
                                   "nothing was left half-written"), err=True)
            ctx.exit(143 if isinstance(error, _Terminated) else 130)
        except SymbackpropError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(_error_line(str(error)), err=True)
            ctx.exit(error.exit_code)
        except click.UsageError as error:
            if isinstance(error, _OneLineUsageError):
                raise
            raise _one_line_usage(error) from None


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that cleanups run as for Ctrl-C."""


def _interrupted(signum, frame):
    raise _Terminated


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM raises _Terminated while the command runs (in the main thread), so that what it started is
    stopped and its temporary files removed, as after Ctrl-C; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _flush_stdout() -> None:
    """Flush stdout; a failure (a full device, a closed pipe) becomes an OutputError."""
    from .output import write_stream

    if sys.stdout is not None:
        write_stream("")


def echo(text: str = "", *, err: bool = False) -> None:
    """A line on stdout (or stderr); a write that fails is an OutputError, not a traceback."""
    from .output import write_stream

    write_stream(f"{text}\n", err=err)


class _Choice(click.Choice):
    """click.Choice whose refusal lists the choices and suggests the one meant (case ignored)."""

    def convert(self, value, param, ctx):
        if value in self.choices:
            return value
        self.fail(f"unknown value {value!r}; {allowed(value, self.choices)}", param, ctx)


class _Seconds(click.ParamType):
    """A finite, positive number of seconds (``nan`` and ``inf`` are refused)."""

    name = "seconds"

    def convert(self, value, param, ctx):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"must be a finite number of seconds > 0, got {value!r}", param, ctx)
        return seconds


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="symbackprop")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx, debug):
    """Derive, verify and render backpropagation for feed-forward networks.

    Without --spec, commands use the lecture's network (the `seed` preset): 2 inputs, ReLU layers of 3
    and 2 units, 1 linear output, loss 1/2 sum (Y_pred - Y_true)^2.
    """
    ctx.ensure_object(dict)["debug"] = debug


def complete_spec(ctx, param, incomplete: str) -> list:
    """Shell completion for ``--spec``: the presets that start with what was typed, then the shell's own file
    completion (click's ``file`` item)."""
    from click.shell_completion import CompletionItem

    from .spec import PRESETS

    return [*(CompletionItem(name, help="preset") for name in PRESETS if name.startswith(incomplete)),
            CompletionItem(incomplete, type="file")]


spec_option = click.option(
    "--spec", "spec_path", metavar="FILE|PRESET", shell_complete=complete_spec,
    help="Network spec: a TOML file, or a preset name (seed). Default: seed.")
def quiet_option(help_text: str):
    return click.option("-q", "--quiet", is_flag=True, help=help_text)


def load(spec_path):
    """The spec named on the command line (a preset or a file), or the seed network."""
    from .spec import load_spec

    return load_spec("seed" if spec_path is None else spec_path)


def _summary(report, quiet: bool, *, err: bool = False) -> None:
    """The verification table, or under --quiet only the names of the formulas that failed (on stderr)."""
    if not quiet:
        echo(report.table(), err=err)
    elif not report.ok:
        failed = ", ".join(check.name for check in report.checks if not check.ok)
        echo(f"{PROG}: verification failed: {failed}", err=True)


@main.command()
@spec_option
@click.option("--format", "formats", default=DEFAULT_FORMATS, show_default=True, metavar="LIST",
              help="Comma-separated formats: md, tex, py, beamer (slides), ipynb (notebook), torch (a PyTorch "
                   "autograd.Function), jax (a jax.custom_vjp function), or all: every format but torch and jax, "
                   "whose modules need PyTorch or JAX to run (markdown, latex, numpy also accepted).")
@click.option("--out", "out_dir", default="out", show_default=True, metavar="DIR",
              help="Output directory, or - to print a single format on stdout (the report goes to stderr).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--lang", default="en", show_default=True, type=_Choice(["en", "ko"]),
              help="Language of the generated text.")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1),
              help="Batch size for the memory table of the lecture formats.")
@click.option("--author", metavar="TEXT", help="Author on the title page (over the spec's `author`).")
@click.option("--institute", metavar="TEXT", help="Institute on the title page (over the spec's `institute`).")
@click.option("--date", metavar="TEXT", help="Date on the title page, as written (over the spec's `date`).")
@click.option("--handout", is_flag=True, help="Slides without step-by-step reveals (one page per frame).")
@click.option("--example-seed", default=0, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="Seed of the worked example's data, parameters and teacher.")
@click.option("--name", default="backprop", show_default=True, metavar="BASENAME",
              help="Base name of the files written (week3 -> week3.md, week3_slides.tex, ...).")
@click.option("--pdf", is_flag=True, help="Also compile each LaTeX output (tex, beamer) to PDF with pdflatex.")
@quiet_option("Print only errors and the paths written; no verification table.")
@click.option("--forward", "forward_path", type=click.Path(dir_okay=False), metavar="FILE.py",
              help="Derive from a forward pass written as straight-line NumPy code in FILE.py (read, never run) "
                   "instead of a spec: every input's and intermediate's gradient. Formats: md, tex, beamer, py, ipynb.")
@click.option("--function", "function_name", default="forward", show_default=True, metavar="NAME",
              help="With --forward: the function that computes the loss.")
@click.option("--sizes", metavar="N=32,d=10,...", help="With --forward: sizes for the generated module.")
def derive(spec_path, formats, out_dir, force, lang, batch, author, institute, date, handout, example_seed,
           name, pdf, quiet, forward_path, function_name, sizes):
    """Derive the backward pass, verify it, and write the chosen formats."""
    from .formats import FORWARD_FORMATS
    from .output import STDOUT, check_targets, parse_formats

    if forward_path is not None:
        if spec_path is not None:
            raise click.UsageError("--forward and --spec exclude each other")
        refused = [fmt for fmt in parse_formats(formats) if fmt not in FORWARD_FORMATS]
        if refused:
            from .errors import FormatError

            raise FormatError(f"--format {refused[0]}: a forward pass written as code (--forward) is printed as md, "
                              "tex, beamer, py or ipynb")
    elif function_name != "forward" or sizes is not None:
        raise click.UsageError("--function and --sizes go with --forward")
    check_targets(formats, out_dir, force=force, name=name, pdf=pdf)  # before anything slow: no SymPy yet
    from .derivation import derive as run_derive
    from .lecture import LectureOptions
    from .output import write_outputs

    options = LectureOptions(author=_title_page_text(author, "--author"),
                             institute=_title_page_text(institute, "--institute"),
                             date=_title_page_text(date, "--date"), handout=handout, example_seed=example_seed)
    if forward_path is not None:
        derivation = run_derive(forward=forward_path, function=function_name, sizes=sizes)
    else:
        derivation = run_derive(load(spec_path))
    report = derivation.verify()
    written = write_outputs(derivation, report, formats, out_dir, force=force, lang=lang, batch=batch,
                            options=options, name=name, pdf=pdf,
                            progress=None if quiet else lambda line: echo(line, err=True))
    _summary(report, quiet, err=out_dir == STDOUT)
    for path in written:
        echo(f"wrote {path}")
    sys.exit(0 if report.ok else 1)


def _title_page_text(value: str | None, option: str) -> str | None:
    """A title-page option checked as the spec checks its strings (length, no control characters)."""
    from .spec import check_title_page_text

    return None if value is None else check_title_page_text(value, option)


@main.command()
@spec_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--batch", type=click.IntRange(min=1), metavar="N",
              help="Verify at the spec's own widths with batch size N (default: small witness sizes).")
@click.option("--budget", default=60.0, show_default=True, type=_Seconds(), metavar="SECONDS",
              help="Time allowed for the check at the spec's sizes (--batch); past it, witness sizes are "
                   "used.")
@quiet_option("Print only errors; no verification table.")
def verify(spec_path, as_json, batch, budget, quiet):
    """Check every backward formula against direct differentiation."""
    from .derivation import derive as run_derive

    derivation = run_derive(load(spec_path))
    with _Progress("verifying") as progress:
        report = derivation.verify(batch=batch, budget=budget if batch else None, progress=progress)
    if report.note and not quiet:
        echo(f"{PROG}: {report.note}", err=True)
    if as_json:
        echo(json.dumps(report.to_dict(), indent=2))
    else:
        _summary(report, quiet)
    sys.exit(0 if report.ok else 1)


class _Progress:
    """A one-line progress bar on stderr, drawn only on a terminal and only once a run passes a second."""

    DELAY = 1.0
    WIDTH = 30

    def __init__(self, label: str):
        self.label, self.drawn = label, False
        self.enabled = sys.stderr.isatty()

    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.enabled and time.monotonic() - self.start >= self.DELAY:
            filled = self.WIDTH * done // max(total, 1)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            click.echo(f"\r{self.label} [{bar}] {done}/{total}", err=True, nl=False)
            self.drawn = True

    def __exit__(self, *exc):
        if self.drawn:
            click.echo("\r\x1b[K", err=True, nl=False)


@main.command()
@spec_option
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as a JSON list.")
@click.option("--file", "claims_file", type=click.Path(dir_okay=False, allow_dash=True), metavar="CLAIMS",
              help="Claims, one per line, in either notation (blank lines and # comments skipped); - reads "
                   "stdin.")
@click.option("--latex", "latex_file", type=click.Path(dir_okay=False, allow_dash=True), metavar="TEX",
              help="LaTeX claims: every $...$, $$...$$, \\(...\\), \\[...\\] block and equation/align/"
                   "gather/multline environment with an '=' (equations side by side split at \\quad, "
                   "\\qquad, \\\\); without such blocks, one claim per line. % comments are skipped, "
                   "\\$ is a dollar sign.")
@click.option("--forward", "forward_path", type=click.Path(dir_okay=False), metavar="FILE.py",
              help="Judge the claims against a forward pass written as code in FILE.py (as derive --forward "
                   "reads it) instead of a spec: its names, d<name> for their gradients.")
@click.option("--function", "function_name", default="forward", show_default=True, metavar="NAME",
              help="With --forward: the function that computes the loss.")
@click.argument("claims", nargs=-1)
def check(spec_path, as_json, claims_file, latex_file, forward_path, function_name, claims):
    """Check written backprop formulas (CLAIMS) against the derivation.

    \b
    A claim is a gradient or a local gradient, as the courses write it; for the
    seed network (the default spec) these are all correct:
      'dL/dW3 = a2.T @ (Y_pred - Y_true)'     'dW2 = np.dot(A1.T, dZ2)'
      'dL/db1 = sum(dL/dZ1, axis=0)'          'dZ1 = np.dot(dZ2, W2.T) * (Z1 >= 0)'
      'dZ2/da1 = W2.T'                        "\\delta^{[2]} = \\delta^{[3]} W^{[3]T} \\odot g'(Z^{[2]})"
    A claim with a backslash is read as LaTeX. Claims files are read up to 1 MiB, as UTF-8.
    Exit 0: all correct; 1: some claim is wrong; 2: none is wrong but some cannot be parsed or decided.
    """
    from .claims import Checker, exit_code, numbered_claims, numbered_latex_claims, read_claims_file

    items = [(claim, None, f"argument {k}", None, 0) for k, claim in enumerate(claims, start=1)]
    for path, latex, numbered in ((claims_file, None, numbered_claims), (latex_file, True, numbered_latex_claims)):
        if path is not None:
            name = "stdin" if path == "-" else path
            items += [(s.text, latex, name, s.line, s.offset) for s in numbered(read_claims_file(path))]
    if not items:
        raise click.UsageError("no claims: give CLAIM arguments, --file CLAIMS or --latex TEX")
    if forward_path is not None and spec_path is not None:
        raise click.UsageError("give --spec or --forward, not both")
    if forward_path is not None:
        from .claims.forward import CodeChecker

        checker = CodeChecker(forward_path, function_name)
    else:
        checker = Checker(load(spec_path))
    if checker.substitution:
        echo(f"{PROG}: {checker.substitution}", err=True)
    verdicts = [checker.check(text, latex, source=source, line=line, offset=offset)
                for text, latex, source, line, offset in items]
    if as_json:
        echo(json.dumps([verdict.to_dict() for verdict in verdicts], indent=2, ensure_ascii=False))
    else:
        for verdict in verdicts:
            echo(verdict.text())
        counts = {kind: sum(v.verdict == kind for v in verdicts) for kind in ("wrong", "error", "undecided")}
        words = {"wrong": "wrong", "error": "could not be parsed", "undecided": "undecided"}
        extra = [f"{counts[kind]} {word}" for kind, word in words.items() if counts[kind]]
        summary = f"{sum(v.ok for v in verdicts)} of {len(verdicts)} claims correct"
        echo(summary + (f" ({', '.join(extra)})" if extra else ""))
    sys.exit(exit_code(verdicts))


@main.command()
@spec_option
@click.argument("paths", metavar="FILE|DIR...", nargs=-1, required=True, type=click.Path())
@click.option("--function", metavar="NAME",
              help="The function to grade: NAME(params, cache, Y_true), or gradients(params, X, Y_true) "
                   "when NAME is gradients. Default: backward; against the file's own forward pass, backward "
                   "or else gradients, called as NAME(cache).")
@click.option("--forward-function", metavar="NAME",
              help="Grade against the gradients of the file's own forward pass NAME (default: forward, when "
                   "no --spec is given and every file defines it).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the verdicts as JSON: gradients (name, verdict, reason, mistake, expected), score; "
                   "for several submissions, a list with each one's file.")
@click.option("--time-limit", default=5.0, show_default=True, metavar="SECONDS",
              type=_Seconds(), help="Time allowed for each call of the function (at most 3600).")
@click.option("--jobs", "-j", type=int, default=None, metavar="N",
              help="Submissions graded at the same time, each in its own process. Default: the number of cores.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write a CSV file: one row per submission, one column per gradient.")
@click.option("--gradescope", "gradescope_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write Gradescope's autograder results.json (one submission): one test per gradient.")
def grade(spec_path, paths, function, forward_function, as_json, time_limit, jobs, csv_path, gradescope_path):
    """Grade backward passes: which gradients are wrong, and which mistake explains each.

    \b
    Each FILE (.py, or a Jupyter notebook .ipynb whose code cells run in order) defines
    backward(params, cache, Y_true) returning a dict of gradients named like the generated module's
    (W1, b1, ..., X); params and cache are what the generated module's init_params and forward make.
    With no --spec, a .py FILE that defines forward() (straight-line code, as derive --forward reads it)
    is graded against its own forward pass: backward(cache) (or gradients(cache)) gets a dict of every
    input, parameter and assigned name of forward() as NumPy arrays and returns any of their gradients,
    keyed d<name> (dW1, dlogits, ...); those it returns are graded, a mistake named at its line.
    A DIR holds submissions: its .py and .ipynb files, and each sub-folder with one such file.
    Every submission runs in its own process and scratch folder, with limits on time per call, memory,
    file size and processes. It is not a security sandbox: run a class's code inside a container.
    Exit 0: all gradients of all submissions correct; 1: some gradient is wrong or a submission could
    not be graded; 2: bad usage (no such file, bad spec, bad option).
    """
    import os

    from .errors import OutputError
    from .grading import GradeError, Grader
    from .grading.batch import (
        Submission,
        check_jobs,
        check_outputs,
        csv_text,
        grade_all,
        gradescope,
        json_text,
        submissions,
        table,
    )
    from .grading.forward import ForwardGraders, is_forward_file
    from .grading.grader import check_function, check_time_limit, submission
    from .grading.notebooks import notebook_source
    from .output import write_file

    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    check_jobs(jobs)
    for name in (function, forward_function):
        if name is not None:
            check_function(name)
    check_time_limit(time_limit)
    single = len(paths) == 1 and not os.path.isdir(paths[0])
    # A file that is not Python or a notebook (a broken notebook too) is refused before the spec is derived.
    if single and submission(paths[0]).suffix == ".ipynb":
        notebook_source(paths[0], GradeError)
    if gradescope_path and len(submissions(paths)) != 1:
        raise GradeError("--gradescope writes the results of one submission (Gradescope grades each submission "
                         "in a run of its own); name one file")
    if spec_path is not None and forward_function is not None:
        raise click.UsageError("--forward-function grades against the file's own forward pass; leave out --spec")
    # A file that could not be written, or would replace a file read, is refused before anything is graded.
    check_outputs({"--csv": csv_path, "--gradescope": gradescope_path}, paths, spec_path)
    files = [file for _, file in submissions(paths) if not isinstance(file, str)]
    if spec_path is None and (forward_function is not None
                              or files and all(is_forward_file(file) for file in files)):
        grader = ForwardGraders(forward_function or "forward", time_limit=time_limit)
    else:
        grader, function = Grader(load(spec_path), time_limit=time_limit), function or "backward"
    if single and isinstance(grader, ForwardGraders):  # its errors keep their own exit codes
        outcomes = [Submission(paths[0], grader.grade(paths[0], function))]
    else:
        with _Progress("grading") as progress:
            outcomes = grade_all(grader, paths, function, jobs, progress=None if single else progress)
    if single and outcomes[0].error:
        raise GradeError(outcomes[0].error)
    failures = []  # a file that cannot be written does not hide the grades: they are printed, then the error
    for option, path, text in (("--csv", csv_path, lambda: csv_text(outcomes, grader.order)),
                               ("--gradescope", gradescope_path,
                                lambda: json.dumps(gradescope(outcomes[0]), indent=2, ensure_ascii=False) + "\n")):
        if path:
            try:
                write_file(path, text(), option)
            except OutputError as error:
                failures.append(str(error))
    if single:
        result = outcomes[0].grade
        echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if as_json else result.text())
    else:
        echo(json_text(outcomes) if as_json else table(outcomes, grader.order))
    if failures:
        raise OutputError("; ".join(failures))
    sys.exit(0 if all(outcome.ok for outcome in outcomes) else 1)
