"""A front end: a forward pass written as straight-line NumPy (or PyTorch) code -> the same step graph.

``load_forward(path)`` reads ``path`` with ``ast`` (the file is never executed), finds the function (default
``forward``) and turns every assignment into a step named as in the file, through ``network.Builder``'s
bookkeeping: each line's expression becomes a SymPy matrix expression with symbolic shapes, and each name the
line reads gets a ``layers.Local`` rule (the vector-Jacobian product of the line, composed from the rules of
the operations in it). The returned name is the loss, a scalar. Nothing after the graph knows which front end
built it: the derivation, the exact proof (``verify``) and the evaluators are the spec's.

Shapes: a ``SHAPES = {"X": ("N", "d"), "W1": ("d", "h"), "b1": (1, "h")}`` dict literal in the file names
each input's dimensions (names are size symbols, integers are fixed, ``"3*e"`` is three times ``e``); sizes
for the generated module come from a ``SIZES = {"N": 32, ...}`` dict literal or ``--sizes "N=32,d=10"``. The
batch size may be bound by a line ``n = X.shape[0]`` and used as a number (``1 / (n - 1)``).

Integer inputs end their shape with the marker ``"ids < V"`` (ids below the size ``V``): ``"Yb": ("N", "ids <
V")`` is one id per sample, ``"Xb": ("N", 3, "ids < V")`` three. They are never differentiated; in the formulas
they are one-hot matrices (``Yb``: N x V, ``Xb``: N x 3V, its three one-hot blocks side by side), as in the
spec's embedding layer: ``C[Xb]`` is ``onehot(Xb) C`` (a gather; its gradient ``onehot(Xb)ᵀ G`` a scatter-add
of rows), ``A[range(n), Yb]`` is ``(A ⊙ onehot(Yb)) 1`` (one entry per row; its gradient puts each row's
upstream entry back at its id), ``F.one_hot(Yb, V)`` is the one-hot matrix itself. ``C[Xb]`` is a 3-D array
(N, 3, e) that the formulas hold as its three rows side by side (N x 3e), so it must be flattened
(``.view(n, -1)``) before anything else reads it; ``A[range(n), Yb]`` is 1-D (N,), a column in the formulas.

Refused too, each at its place: a name that is ``d`` + the name of a value with a gradient (``dX`` beside an
input ``X``, ``dZ`` beside a line ``Z``: the gradients are named so), a line the loss does not depend on, a
number the exact check cannot hold (a division by zero, a constant past a float's range, a root of a negative
number), a dimension or size past ``spec.MAX_PARAMETERS``, and a value with more than ``MAX_EXACT_ENTRIES``
entries at the exact check's sizes. A divisor that is 0 only at a witness size (``1 / (n - 3)``) moves that
size's witness instead.

Anything outside the supported subset is a ``ForwardCodeError`` naming the file, line and column.
"""

from __future__ import annotations

import ast
import math
import re
import sys
from dataclasses import dataclass, field

import sympy as sp

from .errors import SymbackpropError, allowed
from .evaluate import PRIME, PRIME_TEXT
from .expressions import Block, Elementwise, Exp, Log, MaxMask, Place, RowMax, ScalarOf
from .layers import Local
from .network import Network, Step
from .spec import MAX_PARAMETERS

# Sizes the exact check uses for each size symbol, in order of first appearance: small, distinct, none below
# 3, so that a factor 1 / (N - 1) is never 1.
WITNESS_SIZES = (3, 4, 5, 6, 7, 8, 9, 10)
DEFAULT_SIZE = 4
# The most entries one value (an input or a line) may have at the exact check's sizes: a named dimension counts
# its witness size (at most 10), an integer one as written, since the exact proof evaluates every entry. The
# proof's time grows faster than the entries: 3 x 1000 entries took 5 s, 3 x 2000 took 31 s and 3 x 5000 over
# a minute; a large dimension is named and sized in SIZES instead, which the proof replaces by a small one.
MAX_EXACT_ENTRIES = 4096
RELU_AT_ZERO = 0  # np.maximum(z, 0) and torch.relu: PyTorch's relu'(0) = 0
_ARRAY_MODULES = {"np", "numpy", "torch", "F"}
_IDS_MARKER = re.compile(r"ids\s*<\s*([A-Za-z_]\w*)")
_MULTIPLE = re.compile(r"([0-9]+)\s*\*\s*([A-Za-z_]\w*)")


class ForwardCodeError(SymbackpropError):
    """A forward pass the reader cannot take: ``file:line:col: message``."""

    def __init__(self, message: str, source: str = "", node=None):
        self.message = message
        where = source
        if node is not None and hasattr(node, "lineno"):
            where = f"{source}:{node.lineno}:{node.col_offset + 1}"
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class CodeInput:
    """A spec's input as the grader's views ask for it: no sequence steps, no image shape, no vocabulary."""

    steps: None = None
    shape: None = None
    vocab: None = None


@dataclass(frozen=True)
class CodeSpec:
    """What the outputs ask a spec for, for a forward pass written as code: no layers, no loss rule."""

    path: str
    function: str
    layers: tuple = ()
    loss: None = None
    layout: str = "batch-first"
    input: CodeInput = CodeInput()
    activations: tuple = ()


@dataclass(frozen=True)
class CodeNetwork(Network):
    """The step graph of a forward pass written as code. ``dims``: size symbol -> (value for the module,
    witness value for the exact check); ``lines``: step name -> (line, source text); ``loss_name``: the name
    the function returns."""

    dims: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)
    loss_name: str = "loss"
    arguments: tuple = ()

    @property
    def depth(self) -> int:
        return len(self.steps)

    @property
    def images(self) -> bool:
        return False

    @property
    def attends(self) -> bool:
        return False

    @property
    def batch_first(self) -> bool:
        return True

    @property
    def input_name(self) -> str:
        return next(iter(self.inputs))

    @property
    def size_symbols(self) -> tuple:
        return tuple(self.dims)

    def sizes(self, N=None, widths=None, *, witness: bool = True) -> dict:
        """The size symbols' witness values (the exact check's), or their module values."""
        return {symbol: pair[1] if witness else pair[0] for symbol, pair in self.dims.items()}


# -- values while reading ---------------------------------------------------------------------------------------

@dataclass
class _Val:
    """A matrix value of an expression: ``expr`` and how an upstream gradient ``G`` goes back to the named
    values it reads (``back(G)`` -> list of (name, contribution)). ``name``: set when it is a named value;
    ``code``: the NumPy shape where it is not the matrix's (ids, a 3-D gather, a 1-D pick); ``ids``: for integer
    ids, (the size they are below, ids per row or None for a 1-D vector)."""

    expr: sp.Basic
    back: object
    name: str | None = None
    code: tuple | None = None
    ids: tuple | None = None

    @property
    def shape(self):
        return tuple(self.expr.shape)

    @property
    def numpy_shape(self):
        return self.code or self.shape

    @property
    def flat(self) -> bool:
        return self.code is not None and len(self.code) == 1


def _named(name, symbol, code=None) -> _Val:
    return _Val(symbol, lambda G: [(name, G)], name, code)


class _Reader:
    def __init__(self, path: str, text: str, function: str, sizes: dict | None):
        self.path, self.text, self.function = path, text, function
        self.given_sizes = sizes or {}
        self.env: dict = {}  # name -> _Val or a scalar (sympy number or size expression)
        self.inputs, self.roles, self.initializers = {}, {}, {}
        self.steps: list[Step] = []
        self.dims: dict = {}
        self.lines: dict = {}
        self.module_shapes: dict = {}  # name -> its NumPy shape where it is not the formulas' matrix
        self.source_lines = text.splitlines()
        self.literal_nodes: dict = {}  # "SHAPES" / "SIZES" -> their dict literals' nodes, in order
        self.defined: dict = {}  # name -> the node that defines it (an argument, an unpacked name, a line)
        self.numbers: list = []  # the numbers of the sizes the lines read or compute, and divisors' reciprocals

    def error(self, message, node=None):
        return ForwardCodeError(message, self.path, node)

    # -- the file
    def read(self) -> CodeNetwork:
        try:
            module = ast.parse(self.text, self.path)
        except SyntaxError as error:
            raise ForwardCodeError(f"not valid Python: {error.msg}",
                                   f"{self.path}:{error.lineno}:{error.offset or 1}") from None
        shapes, file_sizes = {}, {}
        functions = {}
        for node in module.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and node.targets[0].id in ("SHAPES", "SIZES"):
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    raise self.error(f"{node.targets[0].id} must be a dict literal", node.value) from None
                if not isinstance(value, dict):
                    raise self.error(f"{node.targets[0].id} must be a dict literal", node.value)
                (shapes if node.targets[0].id == "SHAPES" else file_sizes).update(value)
                self.literal_nodes.setdefault(node.targets[0].id, []).append(node.value)
            elif isinstance(node, ast.FunctionDef):
                functions[node.name] = node
        if self.function not in functions:
            raise ForwardCodeError(f"no function {self.function!r} in the file; "
                                   f"{allowed(self.function, functions) if functions else 'it defines none'}",
                                   self.path)
        self.shapes = shapes
        self.file_sizes = {**file_sizes, **self.given_sizes}
        fn = functions[self.function]
        argument_nodes = (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)
        arguments = [arg.arg for arg in argument_nodes]
        self.defined.update({arg.arg: arg for arg in argument_nodes})
        if fn.args.vararg or fn.args.kwarg:
            raise self.error("*args and **kwargs are not supported; name each input", fn)
        self.arguments = arguments
        self.containers = set()  # arguments unpacked into parameters (``params``)
        body = list(fn.body)
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # a docstring
        if not body or not isinstance(body[-1], ast.Return):
            raise self.error(f"{self.function}() must end with 'return loss'", fn)
        for statement in body[:-1]:
            self.statement(statement)
        returned = body[-1].value
        if not isinstance(returned, ast.Name):
            raise self.error("return a name ('return loss'): the loss is a line of its own", body[-1])
        return self.finish(returned, body[-1])

    def statement(self, node):
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1:
                raise self.error("chained assignment (a = b = ...) is not supported", node)
            target = node.targets[0]
            if isinstance(target, ast.Tuple):
                self.unpack(target, node.value, node)
                return
            if not isinstance(target, ast.Name):
                raise self.error("in-place mutation (assignment into an item or attribute) is not supported; "
                                 "assign a new name", target)
            self.assign(target.id, node.value, node)
            return
        words = {ast.For: "a loop (for)", ast.While: "a loop (while)", ast.If: "an if statement",
                 ast.AugAssign: "in-place mutation (augmented assignment)", ast.With: "a with statement",
                 ast.Try: "a try statement", ast.Return: "a return before the last line",
                 ast.AnnAssign: "an annotated assignment", ast.FunctionDef: "a nested function",
                 ast.Expr: "an expression statement (a call whose result is dropped)"}
        what = next((w for kind, w in words.items() if isinstance(node, kind)), type(node).__name__)
        raise self.error(f"{what} is not supported: the forward pass must be straight-line assignments", node)

    def unpack(self, target, value, node):
        names = []
        for element in target.elts:
            if not isinstance(element, ast.Name):
                raise self.error("unpack into plain names", element)
            names.append(element.id)
        if isinstance(value, ast.Name) and value.id in self.arguments and value.id not in self.env:
            self.containers.add(value.id)
            for element, name in zip(target.elts, names):
                self.input(name, "parameter", element)
            return
        if isinstance(value, ast.Attribute) and value.attr == "shape" and isinstance(value.value, ast.Name):
            shape = self.load(value.value.id, value.value).numpy_shape
            if len(names) != len(shape):
                raise self.error(f"{value.value.id} has {len(shape)} dimensions, not {len(names)}", target)
            for name, dim in zip(names, shape):
                self.scalar(name, dim, node)
            return
        raise self.error("tuple unpacking is supported for the parameters argument (W1, b1 = params) and "
                         "for .shape only", node)

    def input(self, name, role, node):
        if role == "parameter":
            self.defined[name] = node
        if name not in self.shapes:
            raise self.error(f"cannot infer the shape of input {name!r}: add it to SHAPES "
                             f"(SHAPES = {{{name!r}: ('N', 'd'), ...}})", node)
        shape = self.shapes[name]
        if isinstance(shape, tuple) and shape and isinstance(shape[-1], str) and shape[-1].startswith("ids"):
            self.ids_input(name, shape, role, node)
            return
        if not (isinstance(shape, tuple) and len(shape) == 2):
            raise self.error(f"SHAPES[{name!r}] must be a pair of dimensions (names or integers), got {_repr(shape)}; "
                             "integer ids end with a marker: ('N', 'ids < V')", node)
        dims = tuple(self.dim(d, self.entry("SHAPES", name, node, axis)) for axis, d in enumerate(shape))
        symbol = self.inputs[name] = sp.MatrixSymbol(name, *dims)
        self.check_entries(name, symbol.shape, self.entry("SHAPES", name, node))
        self.roles[name] = role
        self.initializers[name] = ("weight" if role == "parameter" else "data", None)
        self.env[name] = _named(name, symbol)

    def ids_input(self, name, shape, role, node):
        """An integer input: (rows,) or (rows, k) ids below a size, one-hot in the formulas (see the module's
        docstring)."""
        marker = _IDS_MARKER.fullmatch(shape[-1].strip())
        if marker is None:
            raise self.error(f"SHAPES[{name!r}]: write the ids marker as 'ids < V' (integers below the size V), "
                             f"got {shape[-1]!r}", node)
        if role == "parameter":
            raise self.error(f"{name!r} holds integer ids: pass it as an argument of its own, not in params", node)
        if len(shape) not in (2, 3):
            raise self.error(f"SHAPES[{name!r}]: ids are a vector ('N', 'ids < V') or a matrix ('N', 3, 'ids < V')",
                             node)
        rows = self.dim(shape[0], self.entry("SHAPES", name, node, 0))
        vocab = self.dim(marker.group(1), self.entry("SHAPES", name, node, len(shape) - 1))
        per_row = None
        if len(shape) == 3:
            per_row = shape[1]
            if not (isinstance(per_row, int) and not isinstance(per_row, bool) and per_row >= 1):
                raise self.error(f"SHAPES[{name!r}]: the number of ids per row must be a positive integer, got "
                                 f"{_repr(per_row)}", self.entry("SHAPES", name, node, 1))
            self.bounded(per_row, "the number of ids per row", self.entry("SHAPES", name, node, 1))
        symbol = self.inputs[name] = sp.MatrixSymbol(name, rows, (per_row or 1) * vocab)
        self.check_entries(name, symbol.shape, self.entry("SHAPES", name, node))
        self.roles[name], self.initializers[name] = "ids", ("ids", None)
        code = (rows,) if per_row is None else (rows, sp.Integer(per_row))
        self.module_shapes[name] = code
        self.env[name] = _Val(symbol, lambda G: [], name, code, (vocab, per_row))

    def entry(self, which, key, fallback, index=None):
        """The node of ``which[key]`` (``which[key][index]``) in the file's ``SHAPES`` or ``SIZES`` literal (the
        last one that sets it), else ``fallback``."""
        found = None
        for literal in self.literal_nodes.get(which, ()):
            if isinstance(literal, ast.Dict):
                for key_node, value_node in zip(literal.keys, literal.values):
                    if isinstance(key_node, ast.Constant) and key_node.value == key:
                        found = value_node
        if found is not None and index is not None:
            found = found.elts[index] if isinstance(found, ast.Tuple) and index < len(found.elts) else None
        return found or fallback

    def bounded(self, value: int, what: str, node):
        """``value``, unless it is past ``spec.MAX_PARAMETERS``, the most a spec's network may count."""
        if value > MAX_PARAMETERS:
            shown = f"{value}" if value < 10**15 else f"about 10^{int(value.bit_length() * math.log10(2))}"
            raise self.error(f"{what} is {shown}: at most {MAX_PARAMETERS:.0e} is supported", node)
        return value

    def check_entries(self, name, shape, node):
        """Refuse a value with more than ``MAX_EXACT_ENTRIES`` entries at the exact check's sizes."""
        witness = self.witness()
        count = int(sp.Mul(*shape).xreplace(witness))
        if count <= MAX_EXACT_ENTRIES:
            return
        sizes = ", ".join(f"{symbol}={witness[symbol]}" for symbol in sorted(sp.Mul(*shape).free_symbols, key=str))
        raise self.error(f"{name} is {_shape_words(shape)}: {count} entries at the exact check's sizes"
                         f"{f' ({sizes})' if sizes else ''}, and the exact proof evaluates at most "
                         f"{MAX_EXACT_ENTRIES} per value; name the large dimensions in SHAPES and give their sizes "
                         "in SIZES (SIZES = {'d': 5000}): the proof takes small sizes for names, the module the "
                         "sizes in SIZES", node)

    def dim(self, d, node):
        if isinstance(d, int) and not isinstance(d, bool) and d >= 1:
            return sp.Integer(self.bounded(d, "a dimension", node))
        multiple = _MULTIPLE.fullmatch(d.strip()) if isinstance(d, str) else None
        if multiple and _digits(multiple.group(1)) >= 1:
            factor = self.bounded(_digits(multiple.group(1)), f"the factor of {multiple.group(2)}", node)
            return factor * self.dim(multiple.group(2), node)
        if isinstance(d, str) and d.isidentifier():
            symbol = sp.Symbol(d, positive=True, integer=True)
            if symbol not in self.dims:
                value = self.file_sizes.get(d, DEFAULT_SIZE)
                where = node if d in self.given_sizes else self.entry("SIZES", d, node)
                if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                    raise self.error(f"size {d!r} must be a positive integer, got {_repr(value)}", where)
                self.bounded(value, f"size {d!r}", where)
                self.dims[symbol] = (value, WITNESS_SIZES[len(self.dims) % len(WITNESS_SIZES)])
            return symbol
        raise self.error(f"a dimension is a name, a positive integer or a multiple of a name ('3*e'), got {_repr(d)}",
                         node)

    def scalar(self, name, value, node):
        self.check_new(name, node)
        self.env[name] = sp.sympify(value)

    def check_new(self, name, node):
        if name in self.env or name in self.arguments:
            raise self.error(f"{name!r} is assigned twice; give each value its own name (every line is a step "
                             "of the graph)", node)

    def assign(self, name, value_node, node):
        self.check_new(name, node)
        value = self.expression(value_node)
        if not isinstance(value, _Val):
            self.env[name] = value  # a number or a size expression
            return
        if value.name is not None:  # an alias: name = other
            locals_ = [Local(value.name, None, "identity", lambda G: G)]
        else:
            locals_ = _locals(value)
        self.check_entries(name, value.shape, node)
        symbol = sp.MatrixSymbol(name, *value.shape)
        self.defined[name] = node
        self.steps.append(Step(name, symbol, value.expr, node.lineno, "code", tuple(locals_)))
        self.lines[name] = (node.lineno, self.source_lines[node.lineno - 1].strip())
        if value.code is not None:
            self.module_shapes[name] = value.code
        self.env[name] = _named(name, symbol, value.code)

    def finish(self, returned, node) -> CodeNetwork:
        name = returned.id
        value = self.env.get(name)
        if not isinstance(value, _Val) or value.name not in [s.name for s in self.steps]:
            raise self.error(f"the returned {name!r} must be a value computed in the function (the loss)", returned)
        last = self.steps.pop()
        if tuple(last.symbol.shape) != (1, 1):
            raise self.error(f"the loss {name!r} must be a scalar (reduce it with .sum() or .mean()); its shape is "
                             f"{_shape_words(last.symbol.shape)}", returned)
        unit = sp.Identity(1)
        locals_ = tuple(Local(local.wrt, None, "loss", lambda G, local=local: local.vjp(unit))
                        for local in last.locals)
        loss = Step(name, sp.Symbol(name), ScalarOf(last.expr), last.layer, "loss", locals_)
        self.check_gradient_names(name)
        self.check_reaches_loss(loss)
        used = {local.wrt for step in (*self.steps, loss) for local in step.locals}
        used |= {symbol.name for step in (*self.steps, loss) for symbol in step.expr.free_symbols}  # ids: no locals
        for input_name in self.inputs:
            if input_name not in used:
                raise self.error(f"input {input_name!r} is not used by the forward pass", node)
        spec = CodeSpec(self.path, self.function)
        self.module_shapes.pop(name, None)
        batch = next((s.shape[0] for n, s in self.inputs.items()  # the batch: the first data input's rows
                      if self.roles[n] != "parameter" and isinstance(s.shape[0], sp.Symbol)), None)
        return CodeNetwork(spec, batch or next((s for s in self.dims), sp.Symbol("N")), tuple(self.dims), self.inputs,
                           (*self.steps, loss), self.roles, self.initializers, module_shapes=self.module_shapes,
                           dims=self.dims, lines=self.lines, loss_name=name, arguments=tuple(self.arguments))

    def check_gradient_names(self, loss_name):
        """Refuse a name that is ``d`` + the name of a value with a gradient (a real input, a parameter, a line
        other than the loss): the derivation, the module's ``backward`` and the claims name that gradient so."""
        differentiated = [n for n, role in self.roles.items() if role != "ids"] + [step.name for step in self.steps]
        gradients = {f"d{n}": n for n in differentiated}
        names = [*self.inputs, *(step.name for step in self.steps), loss_name]
        clashes = sorted((n for n in names if n in gradients), key=lambda n: _position(self.defined.get(n)))
        if clashes:
            name = clashes[0]
            raise self.error(f"the name {name!r} is taken by the gradient of {gradients[name]!r} (every input, "
                             "parameter and line x has its gradient named dx); rename it", self.defined.get(name))

    def check_reaches_loss(self, loss):
        """Refuse a line the loss does not read, directly or through other lines: it has no gradient to derive."""
        read = {local.wrt for local in loss.locals}
        for step in reversed(self.steps):
            if step.name in read:
                read |= {local.wrt for local in step.locals}
        anywhere = {local.wrt for step in self.steps for local in step.locals}
        unread = [step for step in self.steps if step.name not in read]
        if unread:
            step = min(unread, key=lambda step: step.name in anywhere)  # a line that nothing reads, first
            raise self.error(f"{step.name!r} is computed but the loss {loss.name!r} does not depend on it; "
                             "remove the line or use its value", self.defined[step.name])

    # -- expressions
    def load(self, name, node):
        if name in self.env:
            return self.env[name]
        if name in self.arguments and name not in self.containers:
            self.input(name, "data", node)
            return self.env[name]
        symbol = sp.Symbol(name, positive=True, integer=True)
        if symbol in self.dims:
            return symbol
        raise self.error(f"undefined name {name!r}", node)

    def expression(self, node):
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.error(f"{type(node).__name__} expressions are not supported", node)
        value = method(node)
        if not isinstance(value, _Val):
            self.constrain(value, node)
        return value

    def constrain(self, number, node, source=None):
        """Refuse a number (of the sizes, as ``1 / (n - 1)``) the exact check cannot hold at its sizes: one that is
        not finite, not real, too large for a float, or a multiple of the prime it computes modulo (or has one in
        its denominator). A size's witness moves to another small one where that makes every such number fit."""
        witness = self.witness()
        if _problem(number.xreplace(witness)) is None:
            if number.free_symbols:
                self.numbers.append(number)
            return
        symbols = sorted(number.free_symbols & set(self.dims), key=str)
        for symbol in symbols:
            taken = {pair[1] for other, pair in self.dims.items() if other != symbol}
            for candidate in range(WITNESS_SIZES[0], WITNESS_SIZES[0] + 4 * len(WITNESS_SIZES) + len(self.dims)):
                trial = {**witness, symbol: sp.Integer(candidate)}
                if candidate not in taken and all(_problem(n.xreplace(trial)) is None
                                                  for n in (number, *self.numbers)):
                    self.dims[symbol] = (self.dims[symbol][0], candidate)
                    self.numbers.append(number)
                    for name, value in self.inputs.items():  # the values' entries at the new size
                        self.check_entries(name, value.shape, self.entry("SHAPES", name, self.defined.get(name)))
                    for step in self.steps:
                        self.check_entries(step.name, step.symbol.shape, self.defined[step.name])
                    return
        at = f" at the exact check's sizes ({', '.join(f'{s}={witness[s]}' for s in symbols)})" if symbols else ""
        raise self.error(f"{source or ast.unparse(node)} {_problem(number.xreplace(witness))}{at}", node)

    def witness(self) -> dict:
        return {symbol: sp.Integer(pair[1]) for symbol, pair in self.dims.items()}

    def _Name(self, node):
        return self.load(node.id, node)

    def _Constant(self, node):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise self.error(f"the constant {_repr(node.value)} is not a number", node)
        if isinstance(node.value, float) and not math.isfinite(node.value) or abs(node.value) > sys.float_info.max:
            raise self.error("this constant is larger than a float can hold (the module computes in float64)", node)
        return sp.Rational(repr(node.value)) if isinstance(node.value, float) else sp.Integer(node.value)

    def _UnaryOp(self, node):
        value = self.value_of(node.operand)
        if isinstance(node.op, ast.USub):
            return self.negate(value)
        if isinstance(node.op, ast.UAdd):
            return value
        raise self.error(f"the operator {type(node.op).__name__} is not supported", node)

    def _BinOp(self, node):
        if isinstance(node.op, ast.MatMult):
            return self.matmul(self.matrix(node.left), self.matrix(node.right), node)
        left, right = self.value_of(node.left), self.value_of(node.right)
        if isinstance(node.op, ast.Pow):
            return self.power(left, node.right, right, node)
        op = type(node.op)
        if op is ast.Div and not isinstance(right, _Val) and right.is_zero:
            written = "" if isinstance(node.right, ast.Constant) else f" ({ast.unparse(node.right)} is 0)"
            raise self.error(f"division by zero: {ast.unparse(node)}{written}", node)
        if op is ast.Div and not isinstance(right, _Val):
            self.constrain(1 / right, node, f"1 / ({ast.unparse(node.right)})")
        if not isinstance(left, _Val) and not isinstance(right, _Val):
            table = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
                     ast.Div: lambda a, b: a / b}
            if op not in table:
                raise self.error(f"the operator {op.__name__} is not supported", node)
            return table[op](left, right)
        if op is ast.Add:
            return self.add(left, right, node)
        if op is ast.Sub:
            return self.add(left, self.negate(right), node)
        if op is ast.Mult:
            return self.multiply(left, right, node)
        if op is ast.Div:
            if not isinstance(right, _Val):
                return _scale(left, 1 / right)
            return self.multiply(left, self.power(right, None, sp.Integer(-1), node), node)
        raise self.error(f"the operator {op.__name__} is not supported", node)

    def value_of(self, node, flat: bool = True):
        """The value of ``node``, a number or a matrix that arithmetic may read: not ids, not a 3-D gather, and
        not a 1-D vector unless ``flat``."""
        value = self.expression(node)
        if not isinstance(value, _Val):
            return value
        if value.ids is not None:
            raise self.error(f"{value.name} holds integer ids: index with it (C[{value.name}], "
                             f"A[range(n), {value.name}]) or one-hot it (F.one_hot({value.name}, "
                             f"{value.ids[0]}))", node)
        if len(value.numpy_shape) == 3:
            raise self.error(f"{_what(value)} is 3-D {_shape_words(value.code)}: flatten each row with "
                             ".view(n, -1) or .reshape(n, -1) before using it", node)
        if value.flat and not flat:
            raise self.error(f"{_what(value)} is 1-D {_shape_words(value.code)}: only elementwise arithmetic "
                             "and a reduction (.mean(), .sum()) are supported on it", node)
        return value

    def matrix(self, node, flat: bool = False):
        value = self.value_of(node, flat)
        if not isinstance(value, _Val):
            raise self.error("a matrix is needed here, not a number", node)
        return value

    def negate(self, value):
        return -value if not isinstance(value, _Val) else _scale(value, -1)

    def matmul(self, a, b, node):
        if a.shape[1] != b.shape[0]:
            raise self.error(f"cannot multiply {_shape_words(a.shape)} by {_shape_words(b.shape)}", node)
        expr = a.expr * b.expr
        return _Val(expr, lambda G: [*a.back(_mm(G, b.expr.T)), *b.back(_mm(a.expr.T, G))])

    def broadcast_shape(self, a, b, node):
        """The matrices' common shape, and the NumPy shape of a 1-D operand's result (which NumPy would
        broadcast as a row against a matrix, and the formulas hold as a column: refused)."""
        code = a.code or b.code
        if a.flat != b.flat and (a.shape if b.flat else b.shape) != (1, 1) or a.flat and b.flat and a.code != b.code:
            raise self.error(f"shapes {_shape_words(a.numpy_shape)} and {_shape_words(b.numpy_shape)}: a 1-D array "
                             "meets only numbers and arrays of its own shape here", node)
        shape = []
        for x, y in zip(a.shape, b.shape):
            if x == y or y == 1:
                shape.append(x)
            elif x == 1:
                shape.append(y)
            else:
                raise self.error(f"shapes {_shape_words(a.shape)} and {_shape_words(b.shape)} do not broadcast", node)
        return tuple(shape), code

    def add(self, a, b, node):
        if not isinstance(a, _Val):
            a, b = b, a
        if not isinstance(b, _Val):  # a matrix plus a number
            expr = a.expr + b * sp.OneMatrix(*a.shape)
            return _Val(expr, a.back, code=a.code)
        shape, code = self.broadcast_shape(a, b, node)
        expr = _expand(a.expr, shape) + _expand(b.expr, shape)
        return _Val(expr, lambda G: [*a.back(_reduce(G, a.shape)), *b.back(_reduce(G, b.shape))], code=code)

    def multiply(self, a, b, node):
        if not isinstance(a, _Val):
            a, b = b, a
        if not isinstance(b, _Val):
            return _scale(a, b)
        shape, code = self.broadcast_shape(a, b, node)
        ea, eb = _expand(a.expr, shape), _expand(b.expr, shape)
        return _Val(sp.hadamard_product(ea, eb),
                    lambda G: [*a.back(_reduce(_had(G, eb), a.shape)), *b.back(_reduce(_had(G, ea), b.shape))],
                    code=code)

    def power(self, base, exponent_node, exponent, node):
        if isinstance(exponent, _Val) or not exponent.is_number:
            raise self.error("the exponent must be a number", exponent_node or node)
        if not isinstance(base, _Val):
            size = abs(base.xreplace(self.witness()))
            if size.is_number and size not in (0, 1) and abs(float(exponent) * float(sp.log(size, 2))) > 1100:
                raise self.error(f"{ast.unparse(node)} is out of a float's range (the module computes in float64)",
                                 node)
            return base ** exponent
        k = sp.Rational(exponent)
        if k == sp.Rational(-1, 2):
            return self.apply(base, "rsqrt")
        if k == sp.Rational(1, 2):
            return self.apply(base, "sqrt")
        if not k.is_integer:
            raise self.error(f"the power {exponent} is not supported (integers, 0.5 and -0.5 are)",
                             exponent_node or node)
        k = int(k)
        if k == 1:
            return base
        if k == 0:
            return _Val(sp.OneMatrix(*base.shape), lambda G: [], code=base.code)
        x = base.expr
        slope = k * (sp.HadamardPower(x, k - 1) if k != 2 else x)
        return _Val(sp.HadamardPower(x, k), lambda G: base.back(_had(G, slope)), code=base.code)

    def apply(self, value, name, node=None):
        x = value.expr
        if name == "exp":
            out = Exp(x)
            return _Val(out, lambda G: value.back(_had(G, out)), code=value.code)
        if name == "log":
            return _Val(Log(x), lambda G: value.back(_had(G, sp.HadamardPower(x, -1))), code=value.code)
        params = (("relu_grad_at_zero", RELU_AT_ZERO),) if name == "relu" else ()
        out = Elementwise(name, x, 0, params)
        return _Val(out, lambda G: value.back(_had(G, out.derivative())), code=value.code)

    def reduce(self, value, how, axis, keepdims, node):
        rows, cols = value.shape
        x = value.expr
        if value.flat and axis == 0:  # the one axis of a 1-D array: all of it
            axis = None
        if axis is None:
            count = rows * cols
            expr = sp.OneMatrix(1, rows) * x * sp.OneMatrix(cols, 1)
            back = lambda G: value.back(_mm(_mm(sp.OneMatrix(rows, 1), G), sp.OneMatrix(1, cols)))
        elif value.flat:
            raise self.error(f"{_what(value)} is 1-D: reduce it with .sum() or .mean()", node)
        elif axis == 0:
            count = rows
            expr = sp.OneMatrix(1, rows) * x
            back = lambda G: value.back(_mm(sp.OneMatrix(rows, 1), G))
        elif axis == 1:
            if not keepdims:
                raise self.error("a sum over axis 1 needs keepdims=True (keepdim=True in PyTorch) to broadcast "
                                 "over the features", node)
            count = cols
            expr = x * sp.OneMatrix(cols, 1)
            back = lambda G: value.back(_mm(G, sp.OneMatrix(1, cols)))
        else:
            raise self.error(f"axis {axis} of a matrix: use 0 or 1", node)
        if how == "mean":
            return _scale(_Val(expr, back), 1 / count)
        return _Val(expr, back)

    def row_max(self, value, axis, keepdims, node):
        if axis != 1 or not keepdims:
            raise self.error("max is supported over each row only: .max(axis=1, keepdims=True)", node)
        x = value.expr
        cols = value.shape[1]
        return _Val(RowMax(x), lambda G: value.back(_had(_mm(G, sp.OneMatrix(1, cols)), MaxMask(x))))

    def _Attribute(self, node):
        if node.attr == "T":
            value = self.matrix(node.value)
            return _Val(value.expr.T, lambda G: value.back(_transpose(G)))
        if node.attr == "values" and isinstance(node.value, ast.Call):  # torch: .max(1, keepdim=True).values
            return self.call(node.value, torch_max=True)
        raise self.error(f"the attribute .{node.attr} is not supported", node)

    # -- indexing: a dimension, a gather of rows by ids, one entry per row
    def _Subscript(self, node):
        value = node.value
        if isinstance(value, ast.Attribute) and value.attr == "shape":
            shape = self.expression(value.value)
            index = node.slice
            if isinstance(shape, _Val) and isinstance(index, ast.Constant) and type(index.value) is int \
                    and -len(shape.numpy_shape) <= index.value < len(shape.numpy_shape):
                return shape.numpy_shape[index.value]
            raise self.error("a dimension is .shape[i] of an array, i a number below its number of dimensions",
                             node)
        if isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2:
            return self.pick(node)
        index = self.expression(node.slice)
        if isinstance(index, _Val) and index.ids is not None:
            return self.gather(self.matrix(value), index, node)
        raise self.error(f"indexing: {_INDEXING}", node)

    def gather(self, table, ids, node):
        """``C[Xb]``: the rows of ``table`` the ids pick, ``onehot(Xb) C``; for k ids per row a 3-D array, held
        as the k rows side by side (the spec's embedding layer)."""
        vocab, per_row = ids.ids
        if table.shape[0] != vocab:
            raise self.error(f"{_what(table)} has {table.shape[0]} rows, but the ids in {ids.name} are below {vocab}",
                             node)
        C, Y = table.expr, ids.expr
        if per_row is None:
            return _Val(Y * C, lambda G: table.back(Y.T * G))
        code = (*ids.code, table.shape[1])
        if per_row == 1:
            return _Val(Y * C, lambda G: table.back(Y.T * G), code=code)
        pieces = [Block(Y, j, per_row, 1) for j in range(per_row)]
        expr = sp.MatAdd(*(Place(piece * C, j, per_row, 1) for j, piece in enumerate(pieces)))
        return _Val(expr, lambda G: table.back(
            sp.MatAdd(*(piece.T * Block(G, j, per_row, 1) for j, piece in enumerate(pieces)))), code=code)

    def pick(self, node):
        """``A[range(n), Yb]``: each row's entry at its id, ``(A ⊙ onehot(Yb)) 1``, a 1-D array of n."""
        rows_node, ids_node = node.slice.elts
        table = self.matrix(node.value)
        ids = self.expression(ids_node)
        if not (isinstance(ids, _Val) and ids.ids is not None and ids.ids[1] is None):
            raise self.error("the second index must be a vector of integer ids (SHAPES: ('N', 'ids < V'))", ids_node)
        vocab = ids.ids[0]
        if not (isinstance(rows_node, ast.Call) and ast.unparse(rows_node.func) in _RANGES
                and len(rows_node.args) == 1 and not rows_node.keywords):
            raise self.error("the first index must be range(n), np.arange(n) or torch.arange(n)", rows_node)
        count = self.expression(rows_node.args[0])
        rows = table.shape[0]
        if isinstance(count, _Val) or sp.expand(count - rows) != 0 or ids.shape[0] != rows:
            raise self.error(f"{ast.unparse(node)}: range({count}) and the {ids.shape[0]} ids must count the "
                             f"{rows} rows of {_what(table)}", node)
        if table.shape[1] != vocab:
            raise self.error(f"{_what(table)} has {table.shape[1]} columns, but the ids in {ids.name} are below "
                             f"{vocab}", node)
        Y, ones = ids.expr, sp.OneMatrix(vocab, 1)
        return _Val(sp.hadamard_product(table.expr, Y) * ones,
                    lambda G: table.back(_had(_mm(G, ones.T), Y)), code=(rows,))

    # -- calls
    def _Call(self, node):
        return self.call(node)

    def call(self, node, torch_max=False):
        func = node.func
        keywords = {k.arg: k.value for k in node.keywords}
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in _ARRAY_MODULES \
                and func.value.id not in self.env:
            name, args = func.attr, list(node.args)
            module = func.value.id
        elif isinstance(func, ast.Attribute):  # a method: A.sum(...), A.exp()
            name, args, module = func.attr, [func.value, *node.args], None
        elif isinstance(func, ast.Name) and func.id == "len" and len(node.args) == 1:
            value = self.expression(node.args[0])
            if not isinstance(value, _Val):
                raise self.error("len() of a number", node)
            return value.numpy_shape[0]
        else:
            what = ast.unparse(func)
            raise self.error(f"unknown call {what}(): {_SUPPORTED}", node)
        if name in ("exp", "log", "tanh", "sqrt", "relu", "sigmoid") and len(args) == 1 and not keywords:
            value = self.matrix(args[0], flat=True)
            return self.apply(value, name, node)
        if name == "maximum" and module is not None and len(args) == 2 and _is_zero(args[1]):
            return self.apply(self.matrix(args[0], flat=True), "relu", node)
        if name == "clamp" and module is None and set(keywords) == {"min"} and _is_zero(keywords["min"]):
            return self.apply(self.matrix(args[0], flat=True), "relu", node)
        if name in ("sum", "mean", "max"):
            if not args:
                raise self.error(f"{name}() needs an array", node)
            value = self.matrix(args[0], flat=name != "max")
            axis_node = args[1] if len(args) > 1 else keywords.get("axis", keywords.get("dim"))
            keep_node = keywords.get("keepdims", keywords.get("keepdim"))
            axis = None if axis_node is None else self.literal(axis_node, "axis")
            keepdims = False if keep_node is None else self.literal(keep_node, "keepdims")
            unknown = set(keywords) - {"axis", "dim", "keepdims", "keepdim"}
            if unknown or len(args) > 2:
                raise self.error(f"{name}(): unsupported arguments {sorted(unknown) or ''}", node)
            if name == "max":
                torch_spelling = module == "torch" or {"dim", "keepdim"} & set(keywords)
                if torch_spelling and not torch_max:
                    raise self.error("torch's .max(dim) returns (values, indices): write .max(1, keepdim=True)"
                                     ".values", node)
                return self.row_max(value, axis, keepdims, node)
            return self.reduce(value, name, axis, keepdims, node)
        if name == "transpose" and module is None and not node.args:
            value = self.matrix(args[0])
            return _Val(value.expr.T, lambda G: value.back(_transpose(G)))
        if name in ("view", "reshape") and (module is None or module in ("np", "numpy", "torch")):
            return self.reshape(args, node)
        if name in ("cat", "concatenate") and module is not None:
            return self.concatenate(args, keywords, node)
        if name == "one_hot" and module == "F":
            return self.one_hot(args, keywords, node)
        if name in ("float", "double") and module is None and len(args) == 1 and not keywords:
            return self.matrix(args[0])
        raise self.error(f"unknown call {ast.unparse(func)}(): {_SUPPORTED}", node)

    def reshape(self, args, node):
        """``A.view(n, -1)``, ``A.reshape(n, -1)``, ``np.reshape(A, (n, -1))``: each row's entries in one row,
        which the formulas already hold (a 3-D gather's k rows side by side)."""
        if len(args) == 2 and isinstance(args[1], (ast.Tuple, ast.List)):
            args = [args[0], *args[1].elts]
        value = self.expression(args[0])
        if not isinstance(value, _Val) or value.ids is not None or value.flat:
            raise self.error("reshape a matrix or a gather C[ids]", node)
        wanted = [self.expression(arg) for arg in args[1:]]
        rows, cols = value.shape
        fits = len(wanted) == 2 and not any(isinstance(w, _Val) for w in wanted) and \
            sp.expand(wanted[0] - rows) == 0 and (wanted[1] == -1 or sp.expand(wanted[1] - cols) == 0)
        if not fits:
            raise self.error(f"only flattening each row is supported: .view({rows}, -1) of "
                             f"{_shape_words(value.numpy_shape)}", node)
        return _Val(value.expr, value.back)

    def concatenate(self, args, keywords, node):
        """``torch.cat([A, B], 1)`` / ``np.concatenate([A, B], axis=1)`` of equal shapes: block j is ``Place``d,
        and receives block j of the upstream gradient."""
        if not args or not isinstance(args[0], (ast.List, ast.Tuple)) or set(keywords) - {"axis", "dim"}:
            raise self.error("concatenate a list of arrays: torch.cat([A, B], 1), np.concatenate([A, B], axis=1)",
                             node)
        axis_node = args[1] if len(args) > 1 else keywords.get("axis", keywords.get("dim"))
        axis = 0 if axis_node is None else self.literal(axis_node, "axis")
        parts = [self.matrix(element) for element in args[0].elts]
        if len({part.shape for part in parts}) != 1:
            raise self.error("only arrays of one shape are concatenated: "
                             + ", ".join(_shape_words(part.shape) for part in parts), node)
        k = len(parts)
        if k == 1:
            return parts[0]
        expr = sp.MatAdd(*(Place(part.expr, j, k, axis) for j, part in enumerate(parts)))
        return _Val(expr, lambda G: [c for j, part in enumerate(parts) for c in part.back(Block(G, j, k, axis))])

    def one_hot(self, args, keywords, node):
        """``F.one_hot(Yb, V)``: the one-hot matrix of a vector of ids, not differentiated."""
        count_node = args[1] if len(args) > 1 else keywords.get("num_classes")
        ids = self.expression(args[0]) if args else None
        if not (isinstance(ids, _Val) and ids.ids is not None and ids.ids[1] is None) or count_node is None:
            raise self.error("F.one_hot(ids, V) of a vector of integer ids (SHAPES: ('N', 'ids < V'))", node)
        vocab = ids.ids[0]
        count = self.expression(count_node)
        if isinstance(count, _Val) or not (count == vocab or count == self.dims.get(vocab, (None,))[0]):
            raise self.error(f"F.one_hot({ids.name}, {ast.unparse(count_node)}): the ids are below {vocab} "
                             f"({self.dims[vocab][0]} in SIZES), so the classes must be {vocab}", count_node)
        return _Val(ids.expr, lambda G: [])

    def literal(self, node, what):
        try:
            value = ast.literal_eval(node)
        except ValueError:
            raise self.error(f"{what} must be a literal", node) from None
        if what == "axis" and value not in (0, 1, -1):
            raise self.error("axis must be 0 or 1", node)
        return 1 if value == -1 else value


_SUPPORTED = ("supported are np.exp, np.log, np.tanh, np.sqrt, np.maximum(Z, 0), np.sum, np.mean, np.max, "
              "np.concatenate, np.reshape, torch.cat, F.one_hot and the methods .sum, .mean, "
              ".max(axis=1, keepdims=True), .exp, .log, .tanh, .sqrt, .relu, .clamp(min=0), .view, .reshape, .T")
_INDEXING = ("supported are A.shape[i], a gather of rows C[ids] and one entry per row A[range(n), ids], ids an "
             "integer input (SHAPES: ('N', 'ids < V'))")
_RANGES = {"range", "np.arange", "numpy.arange", "torch.arange"}


def _problem(value) -> str | None:
    """Why the exact check cannot hold the number ``value``, or None."""
    if value.has(sp.zoo, sp.oo, sp.S.NegativeInfinity, sp.nan):
        return "is not a finite number (it divides by zero)"
    if value.is_real is not True:
        return f"is not a real number ({value})"
    if abs(value) > sys.float_info.max:
        return "is too large for a float (the module computes in float64)"
    if isinstance(value, sp.Rational) and (value.q % PRIME == 0 or value.p != 0 and value.p % PRIME == 0):
        return f"is a multiple of the exact check's prime {PRIME_TEXT}, or divides by one"
    return None


def _position(node) -> tuple:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


def _repr(value) -> str:
    """``repr(value)``, or a description where a number is too long for Python to write in decimal."""
    try:
        return repr(value)
    except ValueError:
        return "a number too long to write out"


def _digits(text: str) -> int:
    """The number ``text`` (ASCII digits) writes; past any size allowed, only its order of magnitude (Python
    refuses to read a very long number)."""
    text = text.lstrip("0") or "0"
    return int(text) if len(text) <= len(str(MAX_PARAMETERS)) else 10 ** (len(text) - 1)


def _what(value: _Val) -> str:
    return value.name or "this value"


def _is_zero(node) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0 and not isinstance(node.value, bool)


def _shape_words(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _is_unit(G) -> bool:
    return isinstance(G, sp.Identity) and G.shape == (1, 1)


def _mm(a, b):
    """A matrix product that drops the loss's unit upstream gradient (a 1 x 1 identity)."""
    if _is_unit(a):
        return b
    if _is_unit(b):
        return a
    return a * b


def _had(G, factor):
    if _is_unit(G):
        return factor
    return sp.hadamard_product(G, factor)


def _transpose(G):
    return G if _is_unit(G) else G.T


def _scale(value: _Val, c) -> _Val:
    return _Val(c * value.expr, lambda G: [(name, c * part) for name, part in value.back(G)], code=value.code)


def _expand(expr, shape):
    """``expr`` broadcast to ``shape``: a row repeated over the rows (``1 v``), a column over the columns."""
    rows, cols = expr.shape
    if rows != shape[0]:
        expr = sp.OneMatrix(shape[0], 1) * expr
    if cols != shape[1]:
        expr = expr * sp.OneMatrix(1, shape[1])
    return expr


def _reduce(G, shape):
    """The adjoint of ``_expand``: ``G`` summed over the axes ``shape`` was broadcast along."""
    if _is_unit(G):
        return G
    rows, cols = G.shape
    if shape[0] != rows:
        G = sp.OneMatrix(1, rows) * G
    if shape[1] != cols:
        G = G * sp.OneMatrix(cols, 1)
    return G


def _locals(value: _Val) -> list[Local]:
    """One ``Local`` per name the line reads: the vector-Jacobian product of the whole line for that name (a
    name read twice receives the sum)."""

    def contribution(wrt):
        def vjp(G):
            parts = [c for name, c in value.back(G) if name == wrt]
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            return total

        return vjp

    names = []
    probe = sp.MatrixSymbol("%G", *value.shape)
    for name, _ in value.back(probe):
        if name not in names:
            names.append(name)
    return [Local(name, None, "vjp", contribution(name)) for name in names]


def parse_sizes(text: str | None) -> dict:
    """``"N=32,d=10"`` -> {"N": 32, "d": 10}."""
    sizes = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not name.isidentifier() or not re.fullmatch(r"[0-9]+", value) or _digits(value) < 1:
            raise ForwardCodeError(f"--sizes: {part.strip()!r} is not NAME=POSITIVE_INTEGER")
        if _digits(value) > MAX_PARAMETERS:
            raise ForwardCodeError(f"--sizes: {name} is larger than {MAX_PARAMETERS:.0e}, the most supported")
        sizes[name] = _digits(value)
    return sizes


def load_forward(path, function: str = "forward", sizes: dict | str | None = None) -> CodeNetwork:
    """The step graph of the function ``function`` in the Python file ``path`` (never executed)."""
    from .files import read_text

    if isinstance(sizes, str):
        sizes = parse_sizes(sizes)
    text = read_text(path)
    return _Reader(str(path), text, function, sizes).read()


def render_forward(derivation, fmt: str, report=None, lang: str = "en", options=None) -> str:
    """The derivation of a forward pass written as code in ``fmt`` and ``lang`` (``options``: the deck's title
    page and handout form); the outputs are ``forward_output.py``'s."""
    from .forward_output import render_forward as render

    return render(derivation, fmt, report, lang, options)


def derive_forward(path, function: str = "forward", sizes: dict | str | None = None):
    """The derivation of a forward pass written as code: every input's and intermediate's gradient."""
    from .derivation import _Walk

    return _Walk(load_forward(path, function, sizes)).run()
