"""Targeted mutation testing: break the code on purpose, one change at a time, and check that a test notices.

Each mutation below names a file, an exact piece of its source (which must occur exactly once), the text that
replaces it, what the change breaks, and the few tests that should fail because of it. The script copies the
working tree (tracked files and untracked ones git does not ignore) into a temporary directory once, applies
one mutation at a time there (never in the checkout), runs the selected tests with the copy first on
``PYTHONPATH`` and reports each mutation as killed (the tests failed) or survived (they passed). It exits 1 if
any mutation survived, or if a selection fails on the unmutated copy (the baseline; a failure there would make
every "killed" meaningless).

    python tests/mutations.py            # all mutations (``make mutate``)
    python tests/mutations.py dropout    # only those whose name contains a word
    python tests/mutations.py --list     # the table, without running anything

Not a test module (no ``test_`` prefix): pytest does not collect it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    description: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, ``-k`` expressions


MUTATIONS = (
    # -- the six of issue 32 --------------------------------------------------------------------------------
    Mutation("worked-after-step", "symbackprop/lecture.py",
             '"updated": _entries({n: example.updated[n] for n',
             '"updated": _entries({n: example.inputs[n] for n',
             "the worked example's 'after the step' values show the parameters before the step (md, tex)",
             ("tests/test_worked_example.py",)),
    Mutation("article-loss-swapped", "templates/backprop.tex.j2",
             "format(before=example.loss, after=example.loss_after)",
             "format(before=example.loss_after, after=example.loss)",
             "the article prints the loss before and after the step swapped",
             ("tests/test_worked_example.py",)),
    Mutation("deck-loss-swapped", "symbackprop/slides.py",
             "format(before=number(ex.loss), after=number(ex.loss_after))",
             "format(before=number(ex.loss_after), after=number(ex.loss))",
             "the Beamer deck prints the loss before and after the step swapped",
             ("tests/test_worked_example.py", "-k", "beamer")),
    Mutation("notebook-loss-after", "symbackprop/notebook.py",
             'f"assert np.isclose(loss_after, {example.loss_after!r})"',
             'f"assert np.isclose(loss_after, {example.loss!r})"',
             "the notebook's worked-example cell asserts the loss before the step as the loss after it",
             ("tests/test_worked_example.py", "-k", "notebooks")),
    Mutation("hinge-margin-negative", "symbackprop/spec.py",
             "alpha = eps = scale = margin = positive",
             "alpha = eps = scale = positive\n    margin = number",
             "a hinge margin of -2 (or 0) is accepted by the spec validation",
             ("tests/test_spec.py", "-k", "bad_losses")),
    Mutation("size-limit-message", "symbackprop/files.py",
             'f"larger than {_limit_text(limit)}, the limit for input files"',
             'f"too large ({_limit_text(limit)} at most)"',
             "the message for a claims (or spec) file over the size limit changed",
             ("tests/test_claims.py", "-k", "size_limit")),
    Mutation("dropout-scale", "symbackprop/layers.py",
             "keep = 1 / (1 - p)",
             "keep = sp.Integer(1)",
             "inverted dropout loses its 1/(1-p) scale, in the forward and backward pass alike",
             ("tests/test_pipeline.py", "-k", "composed_gradients")),
    Mutation("loss-batch-mean", "symbackprop/rules.py",
             '{"sum": 1, "batch_mean": N, "mean": N * k}',
             '{"sum": 1, "batch_mean": 1, "mean": N * k}',
             "a batch-mean loss (cross-entropy, NLL, hinge) loses its 1/N",
             ("tests/test_pipeline.py", "-k", "composed_gradients")),
    # -- the rule table, the layer registry, a printer, the verdict, the grader -----------------------------
    Mutation("mse-gradient-scale", "symbackprop/rules.py",
             '"mean", gradient_scale=2,',
             '"mean", gradient_scale=1,',
             "squared error's gradient loses its factor 2 (the loss itself unchanged)",
             ("tests/test_pipeline.py", "-k", "composed_gradients")),
    Mutation("tanh-derivative-sign", "symbackprop/rules.py",
             "lambda z, p: sp.tanh(z), lambda z, p: 1 - sp.tanh(z) ** 2,",
             "lambda z, p: sp.tanh(z), lambda z, p: 1 + sp.tanh(z) ** 2,",
             "the rule table's derivative of tanh has the wrong sign: 1 + tanh^2",
             ("tests/test_rules.py",)),
    Mutation("dense-transpose-dropped", "symbackprop/layers.py",
             "                   right(source, W.T)]",
             "                   right(source, W)]",
             "the dense layer's local rule for its input (batch-first) drops the transpose of W",
             ("tests/test_pipeline.py", "-k", "composed_gradients")),
    Mutation("latex-transpose-dropped", "symbackprop/printing.py",
             'return f"{{{text}}}^{{\\\\top}}" if "^" in text else f"{text}^{{\\\\top}}"',
             'return f"{{{text}}}^{{\\\\top}}" if "^" in text else f"{text}"',
             "the LaTeX printer drops the transpose mark of a plain matrix name (X^T printed as X)",
             ("tests/test_lecture.py", "-k", "transposes")),
    Mutation("verdict-undecided-exit", "symbackprop/claims/verdict.py",
             'return 2 if any(v.verdict in ("error", "undecided") for v in verdicts) else 0',
             'return 2 if any(v.verdict in ("error",) for v in verdicts) else 0',
             "`check` exits 0 when a claim could not be decided",
             ("tests/test_claims.py", "-k", "undecided")),
    Mutation("claim-unary-minus-dropped", "symbackprop/claims/syntax.py",
             'return node("neg", (operand,), None, signs[0].start, operand.end)',
             "return operand",
             "a claim's unary minus is dropped: -(X.T @ dL/dZ1) is read as X.T @ dL/dZ1",
             ("tests/test_claims_fuzz.py", "-k", "by_construction")),
    Mutation("grader-tolerance", "symbackprop/grading/diagnosis.py",
             "RTOL = 1e-8  #",
             "RTOL = 1e-2  #",
             "the grader accepts gradients off by up to 1 % of their scale",
             ("tests/test_grade.py", "-k", "broken_files")),
    # -- one layer kind's or loss's definition: the eps, attention-scale and reduction mutants change forward and
    # backward alike, so verify and the module's own gradient check still pass (the PReLU one verify refutes);
    # the independent forward pass (tests/autograd_oracle.py) fails each --------------------------------------
    Mutation("norm-eps-dropped", "symbackprop/layers.py",
             'Elementwise("rsqrt", var + eps), l, "rsqrt",',
             'Elementwise("rsqrt", var), l, "rsqrt",',
             "batch and layer norm divide by sqrt(var) instead of sqrt(var + eps)",
             ("tests/test_oracle.py", "-k", "mixed_column or transformer_block")),
    Mutation("prelu-slope-sign", "symbackprop/layers.py",
             "b.step(out, positive + sp.hadamard_product(slope_map, negative),",
             "b.step(out, positive - sp.hadamard_product(slope_map, negative),",
             "PReLU's negative side takes the slope -alpha: max(0, z) - alpha min(0, z)",
             ("tests/test_oracle.py", "-k", "prelu")),
    Mutation("attention-scale", "symbackprop/layers.py",
             "scale = 1 / sp.sqrt(dk)",
             "scale = 1 / dk",
             "attention scales its scores by 1/d instead of 1/sqrt(d)",
             ("tests/test_oracle.py", "-k", "transformer_block or attention_bias")),
    Mutation("elu-numpy-forward", "symbackprop/rules.py",
             '"np.where({z} > 0, {z}, {alpha} * np.expm1(np.minimum({z}, 0)))",',
             '"np.where({z} > 0, {z}, {alpha} * np.minimum({z}, 0))",',
             "the generated module's ELU is linear below 0 (alpha z instead of alpha (e^z - 1)); the rule is unchanged",
             ("tests/test_oracle.py", "-k", "depth5_mixed_column")),
    Mutation("sce-default-reduction", "symbackprop/rules.py",
             '"batch_mean", reductions=("sum", "batch_mean"), targets="distribution", min_outputs=2,',
             '"sum", reductions=("sum", "batch_mean"), targets="distribution", min_outputs=2,',
             "softmax cross-entropy without a reduction in the spec sums over the batch instead of averaging",
             ("tests/test_oracle.py", "-k", "depth5_mixed_column")),
    Mutation("buffer-still-held", "templates/backprop.py.j2",
             "_holders(slot, i) == _FREE:",
             "_holders(slot, i) <= _FREE + 1:",
             "a product's array is reused while one reference besides its line's slot still holds it (a cache, a "
             "gradient or a view the caller kept is overwritten by the next step)",
             ("tests/test_fused_numpy.py", "-k", "never_reused")),
    Mutation("unfolded-last-chunk", "templates/backprop.py.j2",
             "for start in range(0, len(x), chunk):\n        part, image = maps[",
             "for start in range(0, len(x) - 1, chunk):\n        part, image = maps[",
             "col2im_unfold_dot skips the batch's last image when it starts a chunk of its own (a convolution's dX "
             "is 0 there)",
             ("tests/test_conv.py", "-k", "many_positions")),
    Mutation("block-view-written-in-place", "symbackprop/codegen.py",
             "operand = code.arg if isinstance(code, Block) else code", "operand = code",
             "a step's block of a gradient (a view of its array, dh1_3 = da1[2*N:3*N]) counts as an array of its own: "
             "its backward line scales it in place while a skip connection still reads the whole gradient",
             ("tests/test_sequences.py", "-k", "skip_connection_past")),
    Mutation("col2im-apart-either-axis", "templates/backprop.py.j2",
             "apart = sh >= kh and sw >= kw", "apart = sh >= kh or sw >= kw",
             "col2im writes each window's entries instead of adding them where windows overlap along one axis only: "
             "an entry two windows share keeps the last one's gradient",
             ("tests/test_conv.py", "-k", "mixed-stride")),
    Mutation("max-pool-nan-dropped", "templates/backprop.py.j2",
             "        if nan:\n            hit |= np.isnan(column)  # a NaN is the maximum, as for argmax\n", "",
             "the mask of a max-pool window holding a NaN marks no entry (none equals the NaN maximum) instead of "
             "the NaN, as argmax does",
             ("tests/test_conv.py", "-k", "first_max_mask_marks")),
)


def check_table(mutations) -> None:
    """Every mutation's text occurs exactly once in its file, and the names are distinct."""
    names = [m.name for m in mutations]
    if len(set(names)) != len(names):
        sys.exit("mutations.py: duplicate mutation names")
    for m in mutations:
        count = (ROOT / m.path).read_text(encoding="utf-8").count(m.old)
        if count != 1:
            sys.exit(f"mutations.py: {m.name}: the text to replace occurs {count} times in {m.path}, not once")


def copy_tree(target: Path) -> None:
    """The working tree as git sees it: tracked files (as edited) and untracked files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = ROOT / relative
        if not source.is_file():  # deleted in the working tree, or a submodule
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    # pyproject.toml maps symbackprop.templates to templates/: the editable install's finder would import it
    # from the checkout, so the copy gets the package where a plain import finds it first.
    (target / "symbackprop" / "templates").symlink_to(Path("..") / "templates", target_is_directory=True)


def environment(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["HYPOTHESIS_PROFILE"] = "ci"  # the same draws every run: a mutant's fate does not depend on luck
    return env


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, float, str]:
    """(passed, seconds, the last lines of pytest's output)."""
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=copy, env=environment(copy), capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - start, "timed out"
    output = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode == 0, time.monotonic() - start, "\n".join(output[-15:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("words", nargs="*", help="run only the mutations whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="print the table and stop")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of each selection unmutated")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per pytest run (default 300)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print pytest's output for each run")
    args = parser.parse_args(argv)
    check_table(MUTATIONS)
    chosen = [m for m in MUTATIONS if not args.words or any(word in m.name for word in args.words)]
    if args.list:
        for m in chosen:
            print(f"{m.name:26} {m.path:34} {m.description}\n{'':26} kill: pytest {' '.join(m.tests)}")
        return 0
    if not chosen:
        print("no mutation matches", file=sys.stderr)
        return 2
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="symbackprop-mutate-") as directory:
        copy = Path(directory)
        copy_tree(copy)
        probe = "import symbackprop, symbackprop.templates as t; print(symbackprop.__file__); print(t.__file__)"
        where = subprocess.run([sys.executable, "-c", probe],
                               cwd=copy, env=environment(copy), capture_output=True, text=True, check=True)
        for line in where.stdout.split():
            imported = Path(line).resolve()
            if copy.resolve() not in imported.parents:
                print(f"the copy's package is not the one imported: {imported}", file=sys.stderr)
                return 2
        print(f"mutating a copy of the working tree in {copy} (symbackprop and its templates imported from there)",
              flush=True)
        if not args.no_baseline:
            for tests in dict.fromkeys(m.tests for m in chosen):
                passed, seconds, output = run_tests(copy, tests, args.timeout)
                print(f"baseline  {'passed' if passed else 'FAILED':8} {seconds:6.1f} s  pytest {' '.join(tests)}",
                      flush=True)
                if not passed:
                    print(output, file=sys.stderr)
                    return 2
        rows = []
        for m in chosen:
            path = copy / m.path
            original = path.read_text(encoding="utf-8")
            path.write_text(original.replace(m.old, m.new, 1), encoding="utf-8")
            try:
                passed, seconds, output = run_tests(copy, m.tests, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            rows.append((m, "survived" if passed else "killed", seconds))
            print(f"{m.name:26} {rows[-1][1]:8} {seconds:6.1f} s", flush=True)
            if args.verbose or passed:
                print("    " + output.replace("\n", "\n    "), flush=True)
    print(f"\n{'mutation':26} {'result':8} {'seconds':>7}  description")
    for m, result, seconds in rows:
        print(f"{m.name:26} {result:8} {seconds:7.1f}  {m.description}")
    survivors = [m.name for m, result, _ in rows if result == "survived"]
    print(f"\n{len(rows) - len(survivors)} of {len(rows)} killed in {time.monotonic() - began:.0f} s"
          + (f"; survived: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
