"""The command line: ``symbackprop derive | verify | check``, a thin layer over the pipeline.

Exit codes: 0 success, 1 a verification failed (or a checked claim is wrong), 2 bad usage or input.
Errors print one line on stderr; ``--debug`` shows the traceback. SymPy is imported only inside commands,
so ``symbackprop --help`` stays fast.
"""

from __future__ import annotations

import json
import sys

import click

from .errors import SymbackpropError

DEFAULT_FORMATS = "md,tex,py"


class _Group(click.Group):
    """Maps our errors to exit codes and one line on stderr, unless --debug asks for the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SymbackpropError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"symbackprop: error: {error}", err=True)
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
              help="Comma-separated formats: md, tex, py (or markdown, latex, numpy).")
@click.option("--out", "out_dir", default="out", show_default=True, metavar="DIR", help="Output directory.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--lang", default="en", show_default=True, type=click.Choice(["en", "ko"]),
              help="Language of the generated text.")
def derive(spec_path, formats, out_dir, force, lang):
    """Derive the backward pass, verify it, and write the chosen formats."""
    from .output import write_outputs
    from .derivation import derive as run_derive

    derivation = run_derive(load(spec_path))
    report = derivation.verify()
    written = write_outputs(derivation, report, formats, out_dir, force=force, lang=lang)
    click.echo(report.table())
    for path in written:
        click.echo(f"wrote {path}")
    sys.exit(0 if report.ok else 1)


@main.command()
@spec_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(spec_path, as_json):
    """Check every backward formula against direct differentiation."""
    from .derivation import derive as run_derive

    report = run_derive(load(spec_path)).verify()
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    sys.exit(0 if report.ok else 1)
