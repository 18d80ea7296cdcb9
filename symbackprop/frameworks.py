"""Derivation -> the PyTorch and JAX modules: the derived backward pass as a ``torch.autograd.Function`` and as a
``jax.custom_vjp`` function.

Both are printed from the same lines as the NumPy module (``codegen._Module``: the same forward steps, the same
choice of backward forms, the same cache), with a printer subclass per library for the derivation's expressions
(``TorchPrinter``, ``JaxPrinter``) and a name map for the rule table's NumPy snippets (activation helpers, the
loss term): a snippet may use only the NumPy names listed in ``SNIPPET_NAMES``, which each generated module
provides, so a rule written with any other name is refused at generation time instead of written out wrong.

Every layer kind is written: dense layers and their norms, recurrent layers over real inputs or token ids,
embeddings (a gather forward, a scatter-add backward; JAX gives the integer ids a float0 cotangent), attention with
its (causal) softmax over batches of sequences, outputs at every step, and images (conv2d, conv1d, max and average
pooling, flatten: the NumPy module's im2col/col2im lines, with ``torch.nn.functional.unfold``/``fold`` or JAX's
strided slices as the helpers). Only a rule snippet with a NumPy name the module lacks is refused (``snippet``).

Nothing here imports torch or jax: generating a module needs neither; running it needs one of them.
"""

from __future__ import annotations

import re

import sympy as sp

from .codegen import _Module
from .errors import FormatError
from .printing import NumPyPrinter

# The formats this module writes, and the library each needs to run.
FRAMEWORKS = {"torch": "PyTorch", "jax": "JAX"}

# The NumPy names the rule table's snippets may use (``np.<name>``), each provided by the generated module: in
# PyTorch by a small namespace of its own (``tnp``), in JAX by ``jax.numpy``.
SNIPPET_NAMES = frozenset({"where", "maximum", "minimum", "tanh", "exp", "expm1", "log", "log1p", "logaddexp",
                           "sqrt", "abs", "ones_like", "full_like", "asarray", "pi", "sum", "finfo", "sin",
                           "cos"})
# What each library calls the NumPy namespace in a snippet, and the error function (the NumPy module defines its
# own ``erf``).
_NAMESPACE = {"torch": "tnp", "jax": "jnp"}
_ERF = {"torch": "torch.erf", "jax": "jax.scipy.special.erf"}


class TorchPrinter(NumPyPrinter):
    """The NumPy printer's code, written for PyTorch tensors: ``torch.exp``, ``torch.softmax(x, dim=1)``,
    ``torch.cat``; an in-place elementwise product as ``torch.mul(dA, f, out=dA)``. Tensors take ``.T``,
    ``@``, ``.sum(axis=..., keepdims=True)`` and ``.swapaxes`` as arrays do."""

    def _multiply_in_place(self, name: str, factor: str) -> str:
        return f"torch.mul({name}, {factor}, out={name})"

    def _print_Exp(self, expr):
        return f"torch.exp({self._print(expr.arg)})"

    def _print_Log(self, expr):
        return f"torch.log({self._print(expr.arg)})"

    def _print_Sigmoid(self, expr):
        return f"torch.sigmoid({self._print(expr.arg)})"

    def _print_Softmax(self, expr):
        return f"torch.softmax({self._print(expr.arg)}, dim={self._axis(expr.axis)})"

    def _print_LogSoftmax(self, expr):
        return f"torch.log_softmax({self._print(expr.arg)}, dim={self._axis(expr.axis)})"

    def _concatenation(self, blocks, axis):
        return f"torch.cat([{', '.join(self._print(b) for b in blocks)}], dim={self._axis(axis)})"

    def _print_RowMax(self, expr):
        return f"{self._operand(expr.arg)}.amax(dim=1, keepdim=True)"


class JaxPrinter(NumPyPrinter):
    """The NumPy printer's code, written for JAX arrays: ``jnp.exp``, ``jax.nn.softmax``, ``jnp.concatenate``.
    JAX arrays are immutable: nothing is updated in place."""

    def __init__(self, sizes=None, outputs=None, in_place=False, *args, **kwargs):
        super().__init__(sizes, outputs, False, *args, **kwargs)

    def _print_Exp(self, expr):
        return f"jnp.exp({self._print(expr.arg)})"

    def _print_Log(self, expr):
        return f"jnp.log({self._print(expr.arg)})"

    def _print_Sigmoid(self, expr):
        return f"jax.nn.sigmoid({self._print(expr.arg)})"

    def _print_Softmax(self, expr):
        return f"jax.nn.softmax({self._print(expr.arg)}, axis={self._axis(expr.axis)})"

    def _print_LogSoftmax(self, expr):
        return f"jax.nn.log_softmax({self._print(expr.arg)}, axis={self._axis(expr.axis)})"

    def _concatenation(self, blocks, axis):
        return f"jnp.concatenate([{', '.join(self._print(b) for b in blocks)}], axis={self._axis(axis)})"


PRINTERS = {"torch": TorchPrinter, "jax": JaxPrinter}


def snippet(code: str, fmt: str, what: str) -> str:
    """A rule table's NumPy snippet (``np.where(z > 0, 1.0, 0.01).astype(z.dtype)``) for ``fmt``'s module:
    ``np.<name>`` through the module's NumPy namespace, ``erf`` as the library's, ``.astype`` and ``.size``
    as ``.to`` and ``.numel()`` for tensors. ``what`` names the rule in the error raised for a NumPy name the module does not provide."""
    unknown = sorted({name for name in re.findall(r"(?<![\w.])np\.(\w+)", code) if name not in SNIPPET_NAMES})
    if unknown:
        raise FormatError(f"--format {fmt}: {what} uses NumPy's {', '.join('np.' + n for n in unknown)}, which "
                          f"the {FRAMEWORKS[fmt]} module does not provide yet; use --format numpy")
    code = re.sub(r"(?<![\w.])np\.", _NAMESPACE[fmt] + ".", code)
    code = re.sub(r"(?<![\w.])erf\(", _ERF[fmt] + "(", code)
    if fmt == "torch":  # a tensor's dtype cast and entry count
        code = re.sub(r"\.size\b(?!\()", ".numel()", code.replace(".astype(", ".to("))
    return code


def framework_context(derivation, fmt: str) -> dict:
    """Everything ``backprop_<fmt>.py.j2`` needs: the NumPy module's context with lines printed for ``fmt``,
    the rule snippets mapped, the forward lines autodiff runs (without the local gradients kept for the
    derived backward), and the backward lines only the input's gradient needs."""
    if fmt not in FRAMEWORKS:
        raise ValueError(f"unknown framework format {fmt!r}")
    net = derivation.network
    module = _Module(derivation, PRINTERS[fmt])
    ctx = module.context()
    ctx["helpers"] = {name: (arg, snippet(code, fmt, f"the activation helper {name}"))
                      for name, (arg, code) in ctx["helpers"].items()}
    loss = f"the loss {net.spec.loss.kind!r}"
    ctx["loss_code"] = snippet(ctx["loss_code"], fmt, loss)
    ctx["penalty_code"] = snippet(ctx["penalty_code"], fmt, loss) if ctx["penalty_code"] else ""
    kept = set(module.kept.values())
    ctx["autodiff_lines"] = [line for line in ctx["forward_lines"] if line.target not in kept]
    ctx["input_only"] = _input_only(module)
    ctx["frees"] = _frees(ctx["backward_lines"], ctx["cached"], {grad for _, grad in ctx["returned"]} | {
        f"d{net.input_name}"})
    ctx["framework"] = fmt
    return ctx


def _frees(lines, cached, returned) -> list[list[str]]:
    """For each backward line, the values (the cache's, earlier lines' gradients) no later line reads, to let go
    of after it: the derived backward then holds no more at once than autograd's walk, which frees each saved
    value and each upstream gradient as soon as it is used."""
    names = set(cached) | {line.target for line in lines}
    reads = [set(re.findall(r"[A-Za-z_]\w*", line.code)) & names for line in lines]
    frees, later = [], set(returned)
    for line, read in zip(reversed(lines), reversed(reads)):
        frees.append(sorted(read - later - {line.target}))
        later |= read
    return frees[::-1]


def _input_only(module) -> list[str]:
    """The backward lines (their targets) that only the input's gradient needs: skipped when the input needs
    no gradient, as in training."""
    if not module.real_input:
        return []
    needed = set()
    for step in reversed(module.backward):
        if step.name in module.net.parameters or step.symbol.name in needed:
            needed |= {symbol.name for symbol in step.code_expr.atoms(sp.MatrixSymbol)}
            needed.add(step.symbol.name)
    return [step.symbol.name for step in module.backward if step.symbol.name not in needed]

