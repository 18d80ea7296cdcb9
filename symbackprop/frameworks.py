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

import heapq
import re

import sympy as sp

from .codegen import _Module
from .errors import FormatError
from .printing import LARGEST_INT_LITERAL, NumPyPrinter, _flat_coeff_matrices, float_literal

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

    def _print_HadamardProduct(self, expr):
        vjp = _softmax_vjp(expr)
        if vjp is None:
            return super()._print_HadamardProduct(expr)
        upstream, softmax, axis = vjp
        return f"softmax_vjp({self._print(upstream)}, {self._print(softmax)}, dim={self._axis(axis)})"

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


def _softmax_vjp(expr):
    """``(G - ((G ⊙ P) 1 1ᵀ)) ⊙ P`` (softmax's backward along rows, or along columns with ``1 1ᵀ`` on the left)
    as (G, P, the axis summed over), else None."""
    if len(expr.args) != 2:
        return None
    for total, softmax in (expr.args, expr.args[::-1]):
        if not isinstance(total, sp.MatAdd) or len(total.args) != 2:
            continue
        for upstream, correction in (total.args, total.args[::-1]):
            coeff, matrices = _flat_coeff_matrices(correction) if isinstance(correction, sp.MatMul) else (1, [])
            if coeff != -1 or len(matrices) != 2:
                continue
            for product, ones, axis in ((*matrices, 1), (*matrices[::-1], 0)):
                if (isinstance(ones, sp.OneMatrix) and isinstance(product, sp.HadamardProduct)
                        and set(product.args) == {upstream, softmax}):
                    return upstream, softmax, axis
    return None


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
    as ``.to`` and ``.numel()`` for tensors, a whole number beyond ``LARGEST_INT_LITERAL`` as a float literal.
    ``what`` names the rule in the error raised for a NumPy name the module does not provide."""
    unknown = sorted({name for name in re.findall(r"(?<![\w.])np\.(\w+)", code) if name not in SNIPPET_NAMES})
    if unknown:
        raise FormatError(f"--format {fmt}: {what} uses NumPy's {', '.join('np.' + n for n in unknown)}, which "
                          f"the {FRAMEWORKS[fmt]} module does not provide yet; use --format numpy")
    code = re.sub(r"(?<![\w.])np\.", _NAMESPACE[fmt] + ".", code)
    code = re.sub(r"(?<![\w.])(?<![eE][+-])\d+(?![\w.])", _float_if_large, code)  # an ELU alpha of 1e19
    code = re.sub(r"(?<![\w.])erf\(", _ERF[fmt] + "(", code)
    if fmt == "torch":  # a tensor's dtype cast and entry count
        code = re.sub(r"\.size\b(?!\()", ".numel()", code.replace(".astype(", ".to("))
    return code


def _float_if_large(match) -> str:
    """An integer literal of a snippet (a rule's parameter, printed whole) as a float literal where JAX (an int32
    without float64) or PyTorch (an int64) could not take it as a Python int."""
    value = int(match.group())
    return match.group() if value <= LARGEST_INT_LITERAL else float_literal(value)


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
    if fmt == "torch":  # run eagerly, line by line: the order decides how much is held at once
        ctx["backward_lines"] = _depth_first(ctx["backward_lines"])
    ctx["frees"] = _frees(ctx["backward_lines"], ctx["cached"], {grad for _, grad in ctx["returned"]} | {
        f"d{net.input_name}"})
    ctx["forward_frees"] = _frees(ctx["forward_lines"], (), {*ctx["cached"], "Y_pred"})
    ctx["autodiff_frees"] = _frees(ctx["autodiff_lines"], (), {"Y_pred"})
    ctx["framework"] = fmt
    ctx["needs_softmax_vjp"] = any("softmax_vjp(" in line.code for line in ctx["backward_lines"])
    return ctx


def _depth_first(lines) -> list:
    """The backward lines reordered so that a gradient's consumers run soon after it (as autograd's engine walks
    its graph): one attention head's T x T gradients are used up and let go of before the next head's are made,
    where the derivation's order makes every head's first. Each line stays after the lines whose results it reads,
    and in its place relative to any line that writes what it reads or writes (an in-place ``out=``). Among the
    lines that may run next, the one reading the most recently computed value goes first, ties in the original
    order."""
    writes = [{line.target, *re.findall(r"\bout=(\w+)", line.code)} for line in lines]
    reads = [set(re.findall(r"[A-Za-z_]\w*", line.code)) for line in lines]
    waits = [0] * len(lines)
    unblocks = [[] for _ in lines]
    for j in range(len(lines)):
        for i in range(j):
            if reads[j] & writes[i] or writes[j] & (reads[i] | writes[i]):
                waits[j] += 1
                unblocks[i].append(j)
    computed: dict[str, int] = {}  # a name -> when the line writing it ran

    def priority(j):
        return -max((computed.get(name, -1) for name in reads[j]), default=-1), j

    ready = [priority(j) for j in range(len(lines)) if not waits[j]]
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(lines[i])
        computed.update(dict.fromkeys(writes[i], len(order)))
        for j in unblocks[i]:
            waits[j] -= 1
            if not waits[j]:
                heapq.heappush(ready, priority(j))
    return order


def _frees(lines, cached, returned) -> list[list[str]]:
    """For each line, the values (the cache's, earlier lines' results) that neither a later line reads nor the
    function returns, to let go of after it. In the backward pass this frees each saved value and upstream
    gradient as soon as it is used, as autograd's walk does; in the forward pass, each temporary (a
    pre-activation, a centred batch) once the values built from it exist."""
    names = set(cached) | {line.target for line in lines}
    reads = [(set(re.findall(r"[A-Za-z_]\w*", line.code)) | ({line.target} if line.augmented else set())) & names
             for line in lines]
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

