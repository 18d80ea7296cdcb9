"""A front end: a forward pass written as straight-line NumPy (or PyTorch) code -> the same step graph.

``load_forward(path)`` reads ``path`` with ``ast`` (the file is never executed), finds the function (default
``forward``) and turns every assignment into a step named as in the file, through ``network.Builder``'s
bookkeeping: each line's expression becomes a SymPy matrix expression with symbolic shapes, and each name the
line reads gets a ``layers.Local`` rule (the vector-Jacobian product of the line, composed from the rules of
the operations in it). The returned name is the loss, a scalar. Nothing after the graph knows which front end
built it: the derivation, the exact proof (``verify``) and the evaluators are the spec's.

Shapes: a ``SHAPES = {"X": ("N", "d"), "W1": ("d", "h"), "b1": (1, "h")}`` dict literal in the file names
each input's dimensions (names are size symbols, integers are fixed); sizes for the generated module come
from a ``SIZES = {"N": 32, ...}`` dict literal or ``--sizes "N=32,d=10"``. The batch size may be bound by a
line ``n = X.shape[0]`` and used as a number (``1 / (n - 1)``).

Anything outside the supported subset is a ``ForwardCodeError`` naming the file, line and column.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

import sympy as sp

from .errors import SymbackpropError, allowed
from .expressions import Elementwise, Exp, Log, MaxMask, RowMax, ScalarOf
from .layers import Local
from .network import Network, Step

# Sizes the exact check uses for each size symbol, in order of first appearance: small, distinct, none below
# 3, so that a factor 1 / (N - 1) is never 1.
WITNESS_SIZES = (3, 4, 5, 6, 7, 8, 9, 10)
DEFAULT_SIZE = 4
RELU_AT_ZERO = 0  # np.maximum(z, 0) and torch.relu: PyTorch's relu'(0) = 0
_ARRAY_MODULES = {"np", "numpy", "torch", "F"}


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
    values it reads (``back(G)`` -> list of (name, contribution)). ``name``: set when it is a named value."""

    expr: sp.Basic
    back: object
    name: str | None = None

    @property
    def shape(self):
        return tuple(self.expr.shape)


def _named(name, symbol) -> _Val:
    return _Val(symbol, lambda G: [(name, G)], name)


class _Reader:
    def __init__(self, path: str, text: str, function: str, sizes: dict | None):
        self.path, self.text, self.function = path, text, function
        self.given_sizes = sizes or {}
        self.env: dict = {}  # name -> _Val or a scalar (sympy number or size expression)
        self.inputs, self.roles, self.initializers = {}, {}, {}
        self.steps: list[Step] = []
        self.dims: dict = {}
        self.lines: dict = {}
        self.source_lines = text.splitlines()

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
                self.shape_nodes = getattr(self, "shape_nodes", {})
                self.shape_nodes[node.targets[0].id] = node
            elif isinstance(node, ast.FunctionDef):
                functions[node.name] = node
        if self.function not in functions:
            raise ForwardCodeError(f"no function {self.function!r} in the file; "
                                   f"{allowed(self.function, functions) if functions else 'it defines none'}",
                                   self.path)
        self.shapes = shapes
        self.file_sizes = {**file_sizes, **self.given_sizes}
        fn = functions[self.function]
        arguments = [arg.arg for arg in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)]
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
            val = self.load(value.value.id, value.value)
            if len(names) != 2:
                raise self.error("a matrix has two dimensions", target)
            for name, dim in zip(names, val.shape):
                self.scalar(name, dim, node)
            return
        raise self.error("tuple unpacking is supported for the parameters argument (W1, b1 = params) and "
                         "for .shape only", node)

    def input(self, name, role, node):
        if name not in self.shapes:
            raise self.error(f"cannot infer the shape of input {name!r}: add it to SHAPES "
                             f"(SHAPES = {{{name!r}: ('N', 'd'), ...}})", node)
        shape = self.shapes[name]
        if not (isinstance(shape, tuple) and len(shape) == 2):
            raise self.error(f"SHAPES[{name!r}] must be a pair of dimensions (names or integers), got {shape!r}",
                             node)
        dims = tuple(self.dim(d, node) for d in shape)
        symbol = self.inputs[name] = sp.MatrixSymbol(name, *dims)
        self.roles[name] = role
        self.initializers[name] = ("weight" if role == "parameter" else "data", None)
        self.env[name] = _named(name, symbol)

    def dim(self, d, node):
        if isinstance(d, int) and not isinstance(d, bool) and d >= 1:
            return sp.Integer(d)
        if isinstance(d, str) and d.isidentifier():
            symbol = sp.Symbol(d, positive=True, integer=True)
            if symbol not in self.dims:
                value = self.file_sizes.get(d, DEFAULT_SIZE)
                if not (isinstance(value, int) and value >= 1):
                    raise self.error(f"size {d!r} must be a positive integer, got {value!r}", node)
                self.dims[symbol] = (value, WITNESS_SIZES[len(self.dims) % len(WITNESS_SIZES)])
            return symbol
        raise self.error(f"a dimension is a name or a positive integer, got {d!r}", node)

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
        symbol = sp.MatrixSymbol(name, *value.shape)
        self.steps.append(Step(name, symbol, value.expr, node.lineno, "code", tuple(locals_)))
        self.lines[name] = (node.lineno, self.source_lines[node.lineno - 1].strip())
        self.env[name] = _named(name, symbol)

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
        used = {local.wrt for step in (*self.steps, loss) for local in step.locals}
        for input_name in self.inputs:
            if input_name not in used:
                raise self.error(f"input {input_name!r} is not used by the forward pass", node)
        spec = CodeSpec(self.path, self.function)
        batch = next((s.shape[0] for n, s in self.inputs.items()  # the batch: the first data input's rows
                      if self.roles[n] != "parameter" and isinstance(s.shape[0], sp.Symbol)), None)
        return CodeNetwork(spec, batch or next((s for s in self.dims), sp.Symbol("N")), tuple(self.dims), self.inputs,
                           (*self.steps, loss), self.roles, self.initializers, dims=self.dims, lines=self.lines,
                           loss_name=name, arguments=tuple(self.arguments))

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
        return method(node)

    def _Name(self, node):
        return self.load(node.id, node)

    def _Constant(self, node):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise self.error(f"the constant {node.value!r} is not a number", node)
        return sp.Rational(repr(node.value)) if isinstance(node.value, float) else sp.Integer(node.value)

    def _UnaryOp(self, node):
        value = self.expression(node.operand)
        if isinstance(node.op, ast.USub):
            return -value if not isinstance(value, _Val) else _scale(value, -1)
        if isinstance(node.op, ast.UAdd):
            return value
        raise self.error(f"the operator {type(node.op).__name__} is not supported", node)

    def _BinOp(self, node):
        if isinstance(node.op, ast.MatMult):
            return self.matmul(self.matrix(node.left), self.matrix(node.right), node)
        left, right = self.expression(node.left), self.expression(node.right)
        if isinstance(node.op, ast.Pow):
            return self.power(left, node.right, right, node)
        op = type(node.op)
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

    def matrix(self, node):
        value = self.expression(node)
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
        shape = []
        for x, y in zip(a, b):
            if x == y or y == 1:
                shape.append(x)
            elif x == 1:
                shape.append(y)
            else:
                raise self.error(f"shapes {_shape_words(a)} and {_shape_words(b)} do not broadcast", node)
        return tuple(shape)

    def add(self, a, b, node):
        if not isinstance(a, _Val):
            a, b = b, a
        if not isinstance(b, _Val):  # a matrix plus a number
            expr = a.expr + b * sp.OneMatrix(*a.shape)
            return _Val(expr, a.back)
        shape = self.broadcast_shape(a.shape, b.shape, node)
        expr = _expand(a.expr, shape) + _expand(b.expr, shape)
        return _Val(expr, lambda G: [*a.back(_reduce(G, a.shape)), *b.back(_reduce(G, b.shape))])

    def multiply(self, a, b, node):
        if not isinstance(a, _Val):
            a, b = b, a
        if not isinstance(b, _Val):
            return _scale(a, b)
        shape = self.broadcast_shape(a.shape, b.shape, node)
        ea, eb = _expand(a.expr, shape), _expand(b.expr, shape)
        return _Val(sp.hadamard_product(ea, eb),
                    lambda G: [*a.back(_reduce(_had(G, eb), a.shape)), *b.back(_reduce(_had(G, ea), b.shape))])

    def power(self, base, exponent_node, exponent, node):
        if isinstance(exponent, _Val) or not exponent.is_number:
            raise self.error("the exponent must be a number", exponent_node or node)
        if not isinstance(base, _Val):
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
            return _Val(sp.OneMatrix(*base.shape), lambda G: [])
        x = base.expr
        slope = k * (sp.HadamardPower(x, k - 1) if k != 2 else x)
        return _Val(sp.HadamardPower(x, k), lambda G: base.back(_had(G, slope)))

    def apply(self, value, name, node=None):
        x = value.expr
        if name == "exp":
            out = Exp(x)
            return _Val(out, lambda G: value.back(_had(G, out)))
        if name == "log":
            return _Val(Log(x), lambda G: value.back(_had(G, sp.HadamardPower(x, -1))))
        params = (("relu_grad_at_zero", RELU_AT_ZERO),) if name == "relu" else ()
        out = Elementwise(name, x, 0, params)
        return _Val(out, lambda G: value.back(_had(G, out.derivative())))

    def reduce(self, value, how, axis, keepdims, node):
        rows, cols = value.shape
        x = value.expr
        if axis is None:
            count = rows * cols
            expr = sp.OneMatrix(1, rows) * x * sp.OneMatrix(cols, 1)
            back = lambda G: value.back(_mm(_mm(sp.OneMatrix(rows, 1), G), sp.OneMatrix(1, cols)))
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

    def _Subscript(self, node):
        value = node.value
        if isinstance(value, ast.Attribute) and value.attr == "shape" and isinstance(value.value, ast.Name):
            index = node.slice
            if isinstance(index, ast.Constant) and index.value in (0, 1):
                return self.matrix(value.value).shape[index.value]
        raise self.error("indexing is not supported yet (gather A[np.arange(n), y] and C[X] are left for later); "
                         "pass the targets one-hot and multiply", node)

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
            return self.matrix(node.args[0]).shape[0]
        else:
            what = ast.unparse(func)
            raise self.error(f"unknown call {what}(): {_SUPPORTED}", node)
        if name in ("exp", "log", "tanh", "sqrt", "relu", "sigmoid") and len(args) == 1 and not keywords:
            value = self.matrix(args[0])
            return self.apply(value, name, node)
        if name == "maximum" and module is not None and len(args) == 2 and _is_zero(args[1]):
            return self.apply(self.matrix(args[0]), "relu", node)
        if name == "clamp" and module is None and set(keywords) == {"min"} and _is_zero(keywords["min"]):
            return self.apply(self.matrix(args[0]), "relu", node)
        if name in ("sum", "mean", "max"):
            if not args:
                raise self.error(f"{name}() needs an array", node)
            value = self.matrix(args[0])
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
        if name in ("transpose",) and module is None and not node.args:
            value = self.matrix(args[0])
            return _Val(value.expr.T, lambda G: value.back(_transpose(G)))
        raise self.error(f"unknown call {ast.unparse(func)}(): {_SUPPORTED}", node)

    def literal(self, node, what):
        try:
            value = ast.literal_eval(node)
        except ValueError:
            raise self.error(f"{what} must be a literal", node) from None
        if what == "axis" and value not in (0, 1, -1):
            raise self.error("axis must be 0 or 1", node)
        return 1 if value == -1 else value


_SUPPORTED = ("supported are np.exp, np.log, np.tanh, np.sqrt, np.maximum(Z, 0), np.sum, np.mean, np.max and the "
              "methods .sum, .mean, .max(axis=1, keepdims=True), .exp, .log, .tanh, .sqrt, .relu, .clamp(min=0), .T")


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
    return _Val(c * value.expr, lambda G: [(name, c * part) for name, part in value.back(G)])


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
        if not name.isidentifier() or not value.isdigit() or int(value) < 1:
            raise ForwardCodeError(f"--sizes: {part.strip()!r} is not NAME=POSITIVE_INTEGER")
        sizes[name] = int(value)
    return sizes


def load_forward(path, function: str = "forward", sizes: dict | str | None = None) -> CodeNetwork:
    """The step graph of the function ``function`` in the Python file ``path`` (never executed)."""
    from .files import read_text

    if isinstance(sizes, str):
        sizes = parse_sizes(sizes)
    text = read_text(path)
    return _Reader(str(path), text, function, sizes).read()


def derive_forward(path, function: str = "forward", sizes: dict | str | None = None):
    """The derivation of a forward pass written as code: every input's and intermediate's gradient."""
    from .derivation import _Walk

    return _Walk(load_forward(path, function, sizes)).run()


# -- outputs: Markdown and the NumPy module ---------------------------------------------------------------------

FORWARD_FORMATS = ("markdown", "numpy")


def render_forward(derivation, fmt: str, report=None) -> str:
    """``markdown`` or ``numpy`` for a forward pass written as code; other formats refuse in one line."""
    from .errors import FormatError

    if fmt == "markdown":
        return _markdown(derivation, report or derivation.verify())
    if fmt == "numpy":
        return _module(derivation)
    raise FormatError(f"--format {fmt}: a forward pass written as code (--forward) is printed as md or py only "
                      "so far")


def _markdown(derivation, report) -> str:
    from .printing import latex, shape_text

    net = derivation.network
    out = [f"# Backward pass of `{net.spec.function}()` in `{net.spec.path}`", "",
           (f"Every gradient of the loss `{net.loss_name}` (a scalar): each input's, parameter's and intermediate's, "
           "derived line by line in reverse and proved exactly against direct differentiation of the whole "
           "loss (see the verification table). Batch-first: rows are samples. `np.maximum(z, 0)` has slope 0 at 0 "
           "(as PyTorch's ReLU); a row maximum sends its gradient to the first maximum of its row."), "",
           "## Forward pass", "", "| line | code | shape |", "|---:|---|---|"]
    for step in net.steps:
        line, code = net.lines.get(step.name, (step.layer, ""))
        shape = "1 x 1" if step.kind == "loss" else shape_text(step.symbol.shape)
        out.append(f"| {line} | `{code.replace('|', chr(92) + '|')}` | {shape} |")
    out += ["", "## Backward pass", "",
            ("Each gradient is the sum of what every line that reads the value sends back to it; a line's share is "
            "the upstream gradient through that line's local rule."), ""]
    for step in derivation.backward:
        readers = [term.local.of for term in step.terms]
        where = ", ".join(f"`{name}` (line {net.lines.get(name, (net.steps[-1].layer,))[0]})"
                          for name in readers)
        out.append(f"### d{step.name}  ({shape_text(step.shape)})")
        out.append("")
        out.append(f"Read by {where}." + (f" {len(readers)} lines read it: the gradient is the sum of their "
                                          "shares." if len(readers) > 1 else ""))
        out.append("")
        out.append(f"$$\\frac{{\\partial L}}{{\\partial {_latex_var(step.name)}}} = {latex(step.expr)}$$")
        out.append("")
    out += ["## Verification", "", "```", report.table(), "```", ""]
    return "\n".join(out)


def _latex_var(name: str) -> str:
    return r"\mathrm{" + name.replace("_", r"\_") + "}"


def _module(derivation) -> str:
    from .printing import NumPyPrinter, function_name, shape_text, text
    from .rules import activation_rule

    net = derivation.network
    values = {*net.inputs, *(s.name for s in net.steps), *(f"d{s.name}" for s in derivation.backward)}
    sizes = {symbol: str(symbol) if str(symbol) not in values else f"size_{symbol}" for symbol in net.dims}
    printer = NumPyPrinter(sizes)
    helpers = {}
    for expr in [*(s.expr for s in net.steps), *(s.expr for s in derivation.backward)]:
        for node in sorted(expr.atoms(Elementwise), key=str):
            rule = activation_rule(node.activation)
            helpers[function_name(node)] = rule.numpy(node.order, node.params, z="z")
    taken = {*net.inputs, *(s.name for s in net.steps), *(f"d{s.name}" for s in derivation.backward)}
    clash = taken & {*helpers, "first_max_mask", "np", "forward", "backward", "inputs", "cache", "grads", "_full"}
    if clash:
        from .errors import FormatError

        raise FormatError(f"--format py: the name(s) {', '.join(sorted(clash))} of the forward pass are taken by "
                          "the generated module; rename them")
    binding = {}  # size symbol -> (input, axis)
    for name, symbol in net.inputs.items():
        for axis, d in enumerate(symbol.shape):
            if isinstance(d, sp.Symbol):
                binding.setdefault(d, (name, axis))

    def shape_code(shape):
        return "(" + ", ".join(printer.doprint(d) for d in shape) + ")"

    def bind(indent):
        return [f"{indent}{sizes[symbol]} = {name}.shape[{axis}]" for symbol, (name, axis) in binding.items()]

    lines = [f'"""The backward pass of {net.spec.function}() in {net.spec.path}, derived and proved by symbackprop.',
             "",
             "forward(inputs) returns (loss, cache); backward(cache) returns d<name> for every input, parameter and",
             "intermediate of the forward pass. Run this file for a finite-difference check of every input's gradient.",
             '"""', "", "import numpy as np", "",
             "SIZES = {" + ", ".join(f"{str(s)!r}: {v}" for s, (v, _) in net.dims.items()) + "}",
             "SHAPES = {" + ", ".join(f"{name!r}: {tuple(str(d) if isinstance(d, sp.Symbol) else int(d) for d in s.shape)!r}"
                                      for name, s in net.inputs.items()) + "}", ""]
    for name, code in helpers.items():
        lines += ["", f"def {name}(z):", f"    return {code}", ""]
    if any(expr.atoms(MaxMask) for expr in (s.expr for s in derivation.backward)):
        lines += ["", "def first_max_mask(x):", '    """1 at the first maximum of each row, 0 elsewhere."""',
                  "    mask = np.zeros_like(x)", "    mask[np.arange(x.shape[0]), x.argmax(axis=1)] = 1",
                  "    return mask", ""]
    lines += ["", "def _full(value, shape):", "    return np.array(np.broadcast_to(value, shape), dtype=float)", "",
              "", "def forward(inputs):", '    """The loss and every value backward reads."""']
    lines += [f"    {name} = inputs[{name!r}]" for name in net.inputs]
    lines += bind("    ")
    for step in net.steps:
        code = printer.doprint(step.expr.arg if step.kind == "loss" else step.expr)
        source = net.lines.get(step.name, (0, ""))[1]
        if step.kind == "loss":
            lines.append(f"    {step.name} = float(np.sum({code}))  # {source}")
        else:
            lines.append(f"    {step.name} = {code}  # {source}")
    names = [*net.inputs, *(s.name for s in net.steps if s.kind != "loss")]
    lines += ["    cache = {" + ", ".join(f"{n!r}: {n}" for n in names) + "}",
              f"    return {net.steps[-1].name}, cache", "", "",
              "def backward(cache):", ('    """d<name> = dL/d<name> for every input and intermediate, each of its own '
              'shape."""')]
    lines += [f"    {name} = cache[{name!r}]" for name in names]
    lines += bind("    ")
    for step in derivation.backward:
        expr = step.code_expr
        code = printer.doprint(expr)
        if expr.atoms(sp.OneMatrix) or not expr.atoms(sp.MatrixSymbol):
            code = f"_full({code}, {shape_code(step.shape)})"
        lines.append(f"    d{step.name} = {code}  # {text(expr)}  ({shape_text(step.shape)})")
    lines += ["    return {" + ", ".join(f"'d{s.name}': d{s.name}" for s in derivation.backward) + "}", "", "",
              "def random_inputs(seed=0):",
              "    rng = np.random.default_rng(seed)",
              ("    return {name: rng.standard_normal(tuple(SIZES.get(d, d) for d in shape)) "
              "for name, shape in SHAPES.items()}"), "", "",
              "def gradient_check(seed=0, h=1e-6):",
              '    """The largest relative difference between backward and central differences of the loss, along a',
              '    random direction per input."""',
              "    rng = np.random.default_rng(seed + 1)",
              "    inputs = random_inputs(seed)",
              "    grads = backward(forward(inputs)[1])",
              "    worst = 0.0",
              "    for name, value in inputs.items():",
              "        direction = rng.standard_normal(value.shape)",
              "        up = forward({**inputs, name: value + h * direction})[0]",
              "        down = forward({**inputs, name: value - h * direction})[0]",
              "        numeric = (up - down) / (2 * h)",
              "        analytic = float(np.sum(grads['d' + name] * direction))",
              "        worst = max(worst, abs(numeric - analytic) / max(abs(numeric) + abs(analytic), 1e-3))",
              "    return worst", "", "",
              'if __name__ == "__main__":',
              "    error = gradient_check()",
              '    print(f"gradient check: largest relative error {error:.1e}")',
              "    raise SystemExit(0 if error < 1e-5 else 1)", ""]
    return "\n".join(lines)
