"""Grade a backward pass against the student's own forward pass, with no spec (``grade FILE.py``).

The file defines the forward pass as straight-line code (``forward_code.py`` reads it, default function
``forward``) and a backward function (``backward``, else ``gradients``) called as ``backward(cache)``: ``cache``
maps every input, parameter and assigned name of the forward pass to its NumPy array, as the generated
module's ``forward(inputs)`` returns it, and the function returns a dict keyed ``d<name>`` holding any of their
gradients. Those it returns are graded, each against the derivation of the student's own forward pass, with
the same instances-and-mistakes machinery as spec grading (``grader.py``); a mistake is named at the line of
the backward function that computes the gradient.

Integer ids (``"ids < V"`` in SHAPES) reach the cache as integers, and every value and expected gradient has the
forward code's shape (a gather ``C[Xb]`` (N, 3, e), a pick ``A[range(n), Yb]`` (N,)); the derivation holds them
as matrices (ids one-hot). Besides the catalogue's rewrites, a gather's table gradient may be assigned where its
rows must be added up (``LastWritten``: NumPy's fancy assignment keeps the last of repeated ids).
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from ..errors import SymbackpropError, suggestion
from ..evaluate import Evaluator, Float64Backend
from ..expressions import Block
from ..files import read_text
from ..verify import random_float_inputs
from .diagnosis import Passes
from .grader import (
    DEFAULT_TIME_LIMIT,
    GradeError,
    Grader,
    _as_students_write_it,
    _Judgement,
    check_time_limit,
    submission,
)
from .instances import Instance, reference_module
from .mistakes import NAMED, Catalogue
from .runner import run_student
from .windows import _Mistaken

BACKWARD_NAMES = ("backward", "gradients")  # looked for in this order when no --function is given
SEEDS = (0, 1)  # two instances at the file's sizes, two at the witness sizes


class BackwardError(SymbackpropError):
    """A backward function that gives nothing to grade: it raised, ran out of time, returned something other
    than a dict, or returned keys that name no gradient of the forward pass. One line, the file first."""

    exit_code = 1


def defines(path, name: str) -> bool:
    """Whether the Python file at ``path`` defines a top-level function ``name`` (read, never run)."""
    try:
        module = ast.parse(read_text(path))
    except (SyntaxError, ValueError, SymbackpropError):
        return False
    return any(isinstance(node, ast.FunctionDef) and node.name == name for node in module.body)


def backward_function(path, function: str | None) -> str:
    """The backward function to grade: ``function``, else the first of BACKWARD_NAMES the file defines."""
    if function is not None:
        return function
    found = next((name for name in BACKWARD_NAMES if defines(path, name)), None)
    if found is None:
        raise BackwardError(f"{path}: the file defines a forward pass but no backward function: define "
                            "backward(cache) (or gradients(cache)) returning a dict of d<name> gradients, or name "
                            "it with --function")
    return found


class ForwardGrader(Grader):
    """Grades backward functions against the derivation of one forward pass written as code (``path``'s
    function ``forward_function``); built once, it grades any number of files with that forward pass."""

    source = "the forward pass"
    own_sizes = "the file's sizes"

    def __init__(self, path, forward_function: str = "forward", sizes=None, *,
                 time_limit: float = DEFAULT_TIME_LIMIT):
        from ..forward_code import derive_forward

        check_time_limit(time_limit)
        self.time_limit, self.path, self.forward_function = time_limit, str(path), forward_function
        self.derivation = _as_students_write_it(derive_forward(path, forward_function, sizes))
        self.reference = reference_module(self.derivation)
        self.catalogue = _CodeCatalogue(self.derivation)
        returned = {f"d{step.name}": step.name for step in self.derivation.backward}
        self.order = tuple(returned)
        with np.errstate(all="ignore"):
            self.instances = tuple(_instance(self.derivation, self.reference, witness, seed)
                                   for witness in (False, True) for seed in SEEDS)
            self.passes = _CodePasses(self.derivation, self.instances, returned, self.catalogue.reads)
        self._check_reference()

    def grade(self, path, function: str = "backward"):
        """Grade ``function(cache)`` of the Python file at ``path`` (see the module's docstring)."""
        path = submission(path)
        if path.suffix != ".py":
            raise GradeError(f"{path}: grading against the file's own forward pass reads a Python file (.py); "
                             "export the notebook as a script")
        run = run_student(path, function, "cache", self.instances, self.time_limit)
        lines = assignment_lines(read_text(path), function)
        return _ForwardJudgement(self, path, function, "cache", run, lines).grade()

    def context(self, path, function: str, signature: str) -> list[str]:
        return [f"{path}: {function}(cache) against the gradients of {self.forward_function}() in {self.path}",
                f"cache keys: {', '.join(self.instances[0].cache)}",
                "instances: " + "; ".join(i.label for i in self.instances)]


class LastWritten(_Mistaken, MatrixExpr):
    """The one-hot rows of integer ids (``count`` ids per row, their one-hot blocks side by side) with each id
    kept only at its last occurrence in row-major order: what an assignment ``dC[Xb] = demb`` (or ``dC[Xb] +=
    demb``) adds into the table's rows, where NumPy's fancy assignment keeps the last of repeated ids."""

    def __new__(cls, arg, count: int):
        return super().__new__(cls, arg, sp.Integer(count))

    arg = property(lambda self: self.args[0])
    count = property(lambda self: int(self.args[1]))
    shape = property(lambda self: self.arg.shape)

    def evaluate(self, value):
        rows, vocab = len(value) * self.count, value.shape[1] // self.count
        ids, order = value.reshape(rows, vocab).argmax(axis=1), np.arange(rows)
        last = np.full(vocab, -1)
        np.maximum.at(last, ids, order)
        kept = np.zeros((rows, vocab))
        kept[order, ids] = last[ids] == order
        return kept.reshape(value.shape)

    def _sympystr(self, printer):
        return f"last_written({printer._print(self.arg)})"


class _CodeCatalogue(Catalogue):
    """The mistake catalogue with a gather's own mistake: its table's gradient assigned (``dC[Xb] = demb``, or
    ``dC[Xb[:, j]] += demb[:, j]`` per position j) where the rows must be added up (``np.add.at(dC, Xb, demb)``),
    so that an id repeated in the batch keeps only one row's gradient."""

    def _whole(self, name, expr):
        yield from super()._whole(name, expr)
        net = self.net
        scattered = {t.arg for t in expr.atoms(sp.Transpose)
                     if (ids := _ids_of(t.arg)) is not None and net.roles.get(ids.name) == "ids"}
        for ids in sorted({_ids_of(node) for node in scattered}, key=str):
            added = f"where they must be added up (np.add.at(d{name}, {ids.name}, ...))"
            yield expr.xreplace({ids: LastWritten(ids, _per_row(net, ids.name))}), (
                f"your code assigns the rows of d{name} that {ids.name} names (d{name}[{ids.name}] = ...) {added}: an "
                f"id that occurs more than once in {ids.name} keeps only the gradient of its last occurrence"), NAMED
            blocks = [node for node in scattered if isinstance(node, Block) and node.arg == ids]
            if len(blocks) > 1:
                yield expr.xreplace({block: LastWritten(block, 1) for block in blocks}), (
                    f"your code adds the rows of d{name} one position of {ids.name} at a time with a buffered "
                    f"d{name}[{ids.name}[:, j]] += ... {added}: an id that occurs more than once at one position "
                    "keeps only the gradient of its last occurrence there"), NAMED


def _ids_of(node):
    """The matrix symbol of ``node``, a symbol or a block of one (``Xb[block 1/3]``), else None."""
    node = node.arg if isinstance(node, Block) else node
    return node if isinstance(node, sp.MatrixSymbol) else None


def _per_row(net, name: str) -> int:
    """How many ids the integer input ``name`` holds per row (``(N,)``: 1, ``(N, k)``: k)."""
    shape = net.module_shapes[name]
    return int(shape[1]) if len(shape) == 2 else 1


class _CodePasses(Passes):
    """The passes of a forward pass written as code: a gradient is expected in the forward code's shape, which
    the derivation holds as a matrix (a gather ``C[Xb]``'s (N, 3, e) as N x 3e, a pick's (N,) as N x 1)."""

    def expected(self, name: str, index: int):
        instance = self.instances[index]
        value = instance.env[self.symbols[name]]
        shape = self.network.module_shapes.get(self.returned[name])
        return value if shape is None else value.reshape([int(sp.sympify(d).xreplace(instance.sizes)) for d in shape])


class ForwardGraders:
    """One ``ForwardGrader`` per distinct forward pass among the files graded (a class that shares one
    exercise derives it once); grades like a ``Grader``, for ``batch.grade_all``."""

    def __init__(self, forward_function: str = "forward", sizes=None, *, time_limit: float = DEFAULT_TIME_LIMIT):
        self.forward_function, self.sizes, self.time_limit = forward_function, sizes, time_limit
        self.graders, self.order, self._lock = {}, [], threading.Lock()

    def grade(self, path, function: str | None = None):
        """Grade ``function`` (default: backward, else gradients) of the file at ``path``."""
        from ..forward_code import load_forward

        path = submission(path)
        net = load_forward(path, self.forward_function, self.sizes)  # a file without it: one line, naming it
        function = backward_function(path, function)
        key = (tuple((step.name, str(step.expr)) for step in net.steps),
               tuple((name, str(symbol.shape)) for name, symbol in net.inputs.items()), str(net.dims))
        with self._lock:
            if key not in self.graders:
                self.graders[key] = ForwardGrader(path, self.forward_function, self.sizes,
                                                  time_limit=self.time_limit)
            grader = self.graders[key]
        grade = grader.grade(path, function)
        with self._lock:
            self.order += [g.name for g in grade.gradients if g.name not in self.order]
        return grade


class _ForwardJudgement(_Judgement):
    """The verdicts on one run of a backward function: the gradients it returns, each at its own line."""

    def __init__(self, grader, path, function, signature, run, lines: dict):
        super().__init__(grader, path, function, signature, run)
        self.lines = lines

    def grade(self):
        index = next(i for i, instance in enumerate(self.instances) if instance.spec_widths)
        failure = self.run.load_problem or self._failure(index)
        if failure:
            raise BackwardError(f"{self.path}: your {self.function} {failure}" if not self.run.load_problem
                                else f"{self.path}: {failure}")
        call = self.run.calls[index]
        known = self.grader.order
        unknown = [key for key in call.keys if key not in known] + list(call.other_keys)
        if unknown:
            words = [f"{key!r}" + (f" (did you mean {guess!r}?)" if (guess := suggestion(key, known)) else "")
                     for key in unknown]
            raise BackwardError(f"{self.path}: your {self.function} returned keys that name no gradient of "
                                f"{self.grader.forward_function}(): {', '.join(words)}; the gradients are "
                                f"d<name> for its inputs and assigned names: {', '.join(known)}")
        if not call.keys:
            raise BackwardError(f"{self.path}: your {self.function} returned an empty dict; return the gradients "
                                f"you computed, keyed d<name> ({', '.join(known[:3])}, ...)")
        self.order = tuple(name for name in known if name in call.keys)
        return super().grade()

    def _your_code(self, lhs: str) -> str:
        found = self.lines.get(lhs)
        if not found:
            return "your code"
        numbers = [str(n) for n in found]
        listed = numbers[0] if len(numbers) == 1 else f"{', '.join(numbers[:-1])} and {numbers[-1]}"
        return f"your code, line{'s' if len(numbers) > 1 else ''} {listed}"


def assignment_lines(text: str, function: str) -> dict[str, list[int]]:
    """The lines of ``function`` in the source ``text`` that compute each name: assignments to it (``dX = ``,
    ``dX += ``, ``dX[i] = ``), ``np.add.at(dX, ...)``, and a returned dict's key ``'dX'`` entered as
    ``grads['dX'] = ...`` or ``{'dX': name}`` (the lines of ``name``)."""
    try:
        module = ast.parse(text)
    except SyntaxError:
        return {}
    fn = next((node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == function), None)
    if fn is None:
        return {}
    lines: dict[str, set] = {}

    def note(target, line):
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                note(element, line)
        elif isinstance(target, ast.Name):
            lines.setdefault(target.id, set()).add(line)
        elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            key = target.slice
            text_key = isinstance(key, ast.Constant) and isinstance(key.value, str)
            lines.setdefault(key.value if text_key else target.value.id, set()).add(line)

    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                note(target, node.lineno)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            note(node.target, node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "at" \
                and node.args:
            note(node.args[0], node.lineno)
    for node in ast.walk(fn):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and isinstance(value, ast.Name) \
                        and value.id in lines:
                    lines.setdefault(key.value, set()).update(lines[value.id])
    return {name: sorted(found) for name, found in lines.items()}


def _instance(derivation, reference, witness: bool, seed: int) -> Instance:
    """Seeded inputs at the file's sizes (or at the witness sizes, all distinct), the cache the generated
    module's ``forward`` makes from them (integer ids as integers, every value in the forward code's shape), and
    every gradient evaluated from the derivation in float64 (as the derivation's matrices: ids one-hot)."""
    net = derivation.network
    sizes = net.sizes(witness=witness)
    values = random_float_inputs(net, sizes, np.random.default_rng(seed + 2 * witness))
    _, cache = reference.forward({name: _module_input(net, name, value) for name, value in values.items()})
    evaluator = Evaluator(Float64Backend(), dict(values), sizes)
    evaluator.forward(net)
    evaluator.backward(derivation)
    label = f"{', '.join(f'{symbol}={value}' for symbol, value in sizes.items())}, seed {seed + 2 * witness}"
    empty = np.zeros(0)
    return Instance(label, not witness, sizes, {}, {name: np.array(value) for name, value in cache.items()},
                    empty, empty, evaluator.env)


def _module_input(net, name: str, value: np.ndarray) -> np.ndarray:
    """An input as the forward code takes it: integer ids (``(N,)`` or ``(N, k)``) for their one-hot rows (k
    one-hot blocks side by side), a copy of a real array."""
    if net.roles[name] != "ids":
        return value.copy()
    ids = value.reshape(len(value), _per_row(net, name), -1).argmax(axis=-1)
    return ids if len(net.module_shapes[name]) == 2 else ids[:, 0]


def is_forward_file(path, forward_function: str = "forward") -> bool:
    """A .py file that defines ``forward_function``: graded against its own forward pass when no spec is given."""
    return Path(path).suffix == ".py" and Path(path).is_file() and defines(path, forward_function)
