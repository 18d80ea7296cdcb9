"""The command line: ``symbackprop derive | verify | check``, a thin layer over the pipeline.

Exit codes: 0 success, 1 a verification failed (or a checked claim is wrong), 2 bad usage or input.
Errors print one line on stderr; ``--debug`` shows the traceback. SymPy is imported only inside commands,
so ``symbackprop --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
import time

import click

from .errors import SymbackpropError, one_line

DEFAULT_FORMATS = "md,tex,py"


class _Group(click.Group):
    """Maps our errors to exit codes and one line on stderr, unless --debug asks for the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SymbackpropError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"symbackprop: error: {one_line(str(error))}", err=True)
            ctx.exit(error.exit_code)


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


spec_option = click.option(
    "--spec", "spec_path", metavar="FILE|PRESET",
    help="Network spec: a TOML file, or a preset name (seed). Default: seed.")


def load(spec_path):
    """The spec named on the command line (a file or a preset), or the seed network."""
    from .spec import PRESETS, load_spec, seed_spec

    if spec_path is None:
        return seed_spec()
    if spec_path in PRESETS:
        return PRESETS[spec_path]()
    return load_spec(spec_path)


@main.command()
@spec_option
@click.option("--format", "formats", default=DEFAULT_FORMATS, show_default=True, metavar="LIST",
              help="Comma-separated formats: md, tex, py, beamer (slides), ipynb (notebook), or all "
                   "(markdown, latex, numpy also accepted).")
@click.option("--out", "out_dir", default="out", show_default=True, metavar="DIR",
              help="Output directory, or - to print a single format on stdout (the report goes to stderr).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--lang", default="en", show_default=True, type=click.Choice(["en", "ko"]),
              help="Language of the generated text.")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1),
              help="Batch size for the memory table of the lecture formats.")
@click.option("--author", metavar="TEXT", help="Author on the title page (over the spec's `author`).")
@click.option("--institute", metavar="TEXT", help="Institute on the title page (over the spec's `institute`).")
@click.option("--date", metavar="TEXT", help="Date on the title page, as written (over the spec's `date`).")
@click.option("--handout", is_flag=True, help="Slides without step-by-step reveals (one page per frame).")
@click.option("--example-seed", default=0, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="Seed of the worked example's data, parameters and teacher.")
def derive(spec_path, formats, out_dir, force, lang, batch, author, institute, date, handout, example_seed):
    """Derive the backward pass, verify it, and write the chosen formats."""
    from .derivation import derive as run_derive
    from .lecture import LectureOptions
    from .output import STDOUT, check_targets, write_outputs

    spec = load(spec_path)
    check_targets(formats, out_dir, force=force)
    options = LectureOptions(author=_title_page_text(author, "--author"),
                             institute=_title_page_text(institute, "--institute"),
                             date=_title_page_text(date, "--date"), handout=handout, example_seed=example_seed)
    derivation = run_derive(spec)
    report = derivation.verify()
    written = write_outputs(derivation, report, formats, out_dir, force=force, lang=lang, batch=batch,
                            options=options)
    click.echo(report.table(), err=out_dir == STDOUT)
    for path in written:
        click.echo(f"wrote {path}")
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
@click.option("--budget", default=60.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=0, min_open=True),
              help="Time allowed for the check at the spec's sizes (--batch); past it, witness sizes are "
                   "used.")
def verify(spec_path, as_json, batch, budget):
    """Check every backward formula against direct differentiation."""
    from .derivation import derive as run_derive

    derivation = run_derive(load(spec_path))
    with _Progress("verifying") as progress:
        report = derivation.verify(batch=batch, budget=budget if batch else None, progress=progress)
    if report.note:
        click.echo(f"symbackprop: {report.note}", err=True)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
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
@click.option("--file", "claims_file", type=click.File("r", encoding="utf-8"), metavar="CLAIMS",
              help="NumPy-like claims, one per line (blank lines and # comments skipped).")
@click.option("--latex", "latex_file", type=click.File("r", encoding="utf-8"), metavar="TEX",
              help="LaTeX claims: every $$...$$, \\[...\\] or $...$ block with an '=' (equations side by "
                   "side split at \\quad, \\qquad, \\\\); without such blocks, one claim per line. "
                   "Lines starting with % are skipped.")
@click.argument("claims", nargs=-1)
def check(spec_path, as_json, claims_file, latex_file, claims):
    """Check written backprop formulas (CLAIMS) against the derivation.

    \b
    A claim is a gradient or a local gradient, e.g.
      'dL/dW3 = a2.T @ (Y_pred - Y_true)'     'dL/dZ1 = dL/da1 * (Z1 >= 0)'
      'dL/db1 = sum(dL/dZ1, axis=0)'          'dZ2/da1 = W2.T'
    with @ (matrix product), * (elementwise), .T, + -, scalars, ones(N), relu'(Z1), sigmoid'(Z1), ...
    A claim with a backslash is read as LaTeX. Exit 0: all correct; 1: some claim is wrong;
    2: a claim cannot be parsed.
    """
    from .claims import Checker, claims_from_text, latex_claims_from_text

    items = [(claim, None) for claim in claims]
    if claims_file is not None:
        items += [(claim, False) for claim in claims_from_text(claims_file.read())]
    if latex_file is not None:
        items += [(claim, True) for claim in latex_claims_from_text(latex_file.read())]
    if not items:
        raise click.UsageError("no claims: give CLAIM arguments, --file CLAIMS or --latex TEX")
    checker = Checker(load(spec_path))
    verdicts = [checker.check(claim, latex) for claim, latex in items]
    if as_json:
        click.echo(json.dumps([verdict.to_dict() for verdict in verdicts], indent=2, ensure_ascii=False))
    else:
        for verdict in verdicts:
            click.echo(verdict.text())
        click.echo(f"{sum(v.ok for v in verdicts)} of {len(verdicts)} claims correct")
    sys.exit(0 if all(v.ok for v in verdicts) else 1)
