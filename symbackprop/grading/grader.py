"""Grade a student's backward pass: run it on the instances, compare each gradient, name the mistakes."""

from __future__ import annotations

import dataclasses
import difflib
import keyword
import math
from pathlib import Path

import numpy as np

from ..derivation import derive
from ..errors import SymbackpropError
from .diagnosis import Passes, Search, same
from .instances import build_instances, reference_module
from .mistakes import Catalogue
from .notebooks import notebook_source
from .report import Grade, GradientVerdict
from .runner import run_student
from .views import derivation_value

DEFAULT_TIME_LIMIT = 5.0  # seconds per call of the student's function
MAX_TIME_LIMIT = 3600.0  # seconds: a longer limit is a usage error, not a wait
SUFFIXES = (".py", ".ipynb")
SIGNATURES = {"backward": "params, cache, Y_true", "gradients": "params, X, Y_true"}


class GradeError(SymbackpropError):
    """A grading request that cannot be carried out (a file not found, a file that is not Python or a notebook, a
    time limit out of range, a function name that is not one, a spec whose gradients cannot be evaluated at
    the grading instances): a usage error, found before any student code runs."""


class Grader:
    """Grades students' code for one spec: derives it and builds the instances once, then grades any number
    of files (each in a process of its own).

    A file defines ``backward(params, cache, Y_true)`` (or another name, called the same way), or
    ``gradients(params, X, Y_true)`` that runs its own forward pass; either returns a dict of gradients named
    like the generated module's (``W1``, ``b1``, ..., ``X``).
    """

    source = "the spec"  # what the gradients are derived from, as messages name it
    own_sizes = "the spec's widths"  # the sizes the submissions are written for, as notes name them

    def __init__(self, spec=None, *, time_limit: float = DEFAULT_TIME_LIMIT):
        check_time_limit(time_limit)
        self.time_limit = time_limit
        self.derivation = _as_students_write_it(derive(spec))
        net = self.derivation.network
        self.reference = reference_module(self.derivation)
        self.catalogue = Catalogue(self.derivation)
        with np.errstate(all="ignore"):  # a spec that overflows here is refused below, with its own message
            self.instances = build_instances(self.derivation, self.reference)
            first = self.instances[0]
            names = self.reference.backward(*_copies(first.params, first.cache, first.targets))
            returned = {name: net.input_name if name == "X" else name for name in names}
            self.order = sorted(returned, key=lambda name: self.catalogue.index[returned[name]])
            self.passes = Passes(self.derivation, self.instances, returned, self.catalogue.reads)
        self._check_reference()

    def grade(self, path, function: str = "backward") -> Grade:
        """Grade the function ``function`` of the Python file or Jupyter notebook at ``path``."""
        path = submission(path)
        check_function(function)
        source = notebook_source(path, GradeError) if path.suffix == ".ipynb" else None
        signature = "gradients" if function == "gradients" else "backward"
        run = run_student(path, function, signature, self.instances, self.time_limit, source)
        judgement = _Judgement(self, path, function, signature, run)
        if source is not None and source.skipped:
            judgement.notes.append("skipped (IPython only): " + "; ".join(source.skipped))
        return judgement.grade()

    def _check_reference(self):
        """Refuse a spec whose expected gradients are not finite at an instance (a custom activation that
        overflows there): no submission could be graded fairly."""
        for instance in self.instances:
            for symbol in self.passes.symbols.values():
                value = instance.env[symbol]
                if not np.all(np.isfinite(value)):
                    raise GradeError(
                        f"{self.source}'s gradient {symbol} is not finite at the grading instance "
                        f"({instance.label}): {float(value[~np.isfinite(value)][0])} in float64; a function of "
                        f"{self.source} overflows there, so no submission could be graded fairly")

    def expected(self, name: str) -> str:
        step = self.passes.returned[name]
        return f"{self.catalogue.lhs(step)} = {self.catalogue.formula(self.catalogue.steps[step].expr)}"

    def context(self, path, function: str, signature: str) -> list[str]:
        """The lines that say what was run: the call, the cache's keys, the instances."""
        spec = self.derivation.spec
        network = f"{' -> '.join(map(str, spec.sizes))} ({spec.layout}, loss {spec.loss.kind})"
        lines = [f"{path}: {function}({SIGNATURES[signature]}) for the network {network}"]
        if signature == "backward":
            lines.append(f"cache keys: {', '.join(self.instances[0].cache)}")
        return [*lines, "instances: " + "; ".join(i.label for i in self.instances)]


def check_time_limit(seconds: float) -> None:
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIME_LIMIT):
        raise GradeError(f"the time limit must be a number of seconds above 0 and at most {MAX_TIME_LIMIT:g}, "
                         f"not {seconds:g}")


def check_function(name: str) -> None:
    if not (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)):
        raise GradeError(f"--function {name!r} is not a Python function name")


def submission(path) -> Path:
    """``path`` as a file to grade: an existing .py file or .ipynb notebook."""
    path = Path(path)
    if not path.is_file():
        raise GradeError(f"{path}: file not found")
    if path.suffix not in SUFFIXES:
        raise GradeError(f"{path}: not a Python file (.py) or a Jupyter notebook (.ipynb)")
    return path


def _as_students_write_it(derivation):
    """The derivation with each formula in its shorter form where it has one, as students write it: batch
    norm's compact dX, a sigmoid or softmax output combined with its cross-entropy, ``softmax - T`` (the
    instances' targets sum to 1 where the loss reads distributions)."""
    backward = tuple(dataclasses.replace(step, expr=step.alternatives[0].expr) if step.alternatives else step
                     for step in derivation.backward)
    return dataclasses.replace(derivation, backward=backward, _reports={})


def grade(path, spec=None, *, function: str = "backward", time_limit: float = DEFAULT_TIME_LIMIT) -> Grade:
    """Grade the backward pass in the file at ``path`` against ``spec`` (default: the seed network)."""
    return Grader(spec, time_limit=time_limit).grade(path, function)


class _Judgement:
    """The verdicts on one run of a student's file."""

    def __init__(self, grader: Grader, path: Path, function: str, signature: str, run):
        self.grader, self.run, self.function = grader, run, function
        self.instances = grader.instances
        self.notes = []
        self.context = grader.context(path, function, signature)
        self.path, self.signature, self.order = path, signature, grader.order

    def grade(self) -> Grade:
        spec_calls = [i for i, instance in enumerate(self.instances) if instance.spec_widths]
        failure = self.run.load_problem or next(
            (f"your {self.function} {problem} ({self.instances[i].label})"
             for i in spec_calls if (problem := self._failure(i))), "")
        if failure:
            return self._grade({name: (failure, None) for name in self.order})
        self._input_gradient_optional(spec_calls[0])
        self._note_extra_keys(spec_calls[0])
        observed = {i: {} for i in spec_calls}
        outcomes = {name: self._compare(name, spec_calls, observed) for name in self.order}
        observed.update(self._other_widths(observed, spec_calls, outcomes))
        compared = observed[spec_calls[0]]
        wrong = {name for name in compared if outcomes[name][0]}
        if wrong:
            explanation = self._explain(observed, wrong, set(compared) - wrong, spec_calls)
            if explanation is not None:
                self._attribute(explanation, outcomes)
        return self._grade(outcomes)

    def _explain(self, observed, wrong, correct, spec_calls):
        """The mistakes that explain the most wrong gradients: checked on every instance the code ran on, or,
        failing that, on the spec's widths alone (code that is right only for the spec's sizes, e.g. ``/ N``
        for a mean over all N x k entries when k = 1)."""
        found = Search(self.grader.catalogue, self.grader.passes, observed, wrong, correct).run()
        if len(observed) > len(spec_calls) and (found is None or found.explained != wrong):
            at_spec = {index: observed[index] for index in spec_calls}
            retry = Search(self.grader.catalogue, self.grader.passes, at_spec, wrong, correct).run()
            if retry is not None and (found is None or len(retry.explained) > len(found.explained)):
                return retry
        return found

    def _other_widths(self, observed, spec_calls, outcomes) -> dict:
        """The student's arrays at the other widths, for the search: none when the code fails there, or when
        a gradient that is right at the spec's widths is not right there (code written for the spec's sizes).
        A gradient that is wrong at the spec's widths but has their shape, and another shape here, is left out
        here (a transpose or a factor that fits only because two of the spec's widths are equal)."""
        others = [i for i in range(len(self.instances)) if i not in spec_calls]
        problem = next(((i, p) for i in others if (p := self._failure(i))), None)
        if problem:
            self.notes.append(f"at other widths ({self.instances[problem[0]].label}) your {self.function} "
                              f"{problem[1]}; graded at {self.grader.own_sizes} only")
            return {}
        found, assumes = {i: {} for i in others}, []
        for name in observed[spec_calls[0]]:
            passes = self.grader.passes
            spec_shape = all(self.run.calls[i].arrays[name].shape == passes.expected(name, i).shape for i in spec_calls)
            for index in others:
                array, expected = self.run.calls[index].arrays.get(name), passes.expected(name, index)
                usable = array is not None and (not spec_shape or array.shape == expected.shape)
                if not outcomes[name][0] and not (usable and same(array, expected, self._atol(index, name))):
                    assumes.append(name)
                    break
                found[index][name] = self._matrix(name, array) if usable else None
        if assumes:
            own = self.grader.own_sizes
            self.notes.append(f"{', '.join(assumes)}: right at {own}, not at other widths "
                              f"({self.instances[others[0]].label} and others): the code builds in {own}, which "
                              f"is fine here; only {own} are used")
            return {}
        return found

    def _failure(self, index) -> str:
        """Why call ``index`` gave no gradients, or ""."""
        call = self.run.calls[index]
        if call is None:
            return self.run.ended or "was not called: an earlier call ran out of time"
        if call.status == "timeout":
            return f"ran longer than the time limit of {self.grader.time_limit:g} s"
        if call.status == "error":
            return f"raised {call.error}"
        if call.status == "not a dict":
            return f"returned a {call.error}, not a dict"
        return ""

    def _input_gradient_optional(self, index):
        """A training step (``gradients``) need not return the input's gradient: graded when it is there."""
        if self.signature == "gradients" and "X" in self.order and "X" not in self.run.calls[index].keys:
            self.order = tuple(name for name in self.order if name != "X")
            self.notes.append("no input gradient X returned: a training step does not need it, so it is not graded")

    def _note_extra_keys(self, index):
        call = self.run.calls[index]
        extra = [key for key in call.keys if key not in self.grader.order] + list(call.other_keys)
        if extra:
            self.notes.append(f"keys ignored in the returned dict: {', '.join(extra)} "
                              f"(the gradients are named {', '.join(self.grader.order)})")

    def _compare(self, name, spec_calls, observed):
        """(reason, mistake) for one gradient at the spec's widths ("" reason when it is right); puts the
        student's arrays in ``observed`` for the search."""
        arrays = {}
        for index in spec_calls:
            call = self.run.calls[index]
            if name in call.problems:
                return f"the returned {name} is {call.problems[name]}", None
            if name not in call.arrays:
                return _missing(name, call.keys), None
            arrays[index] = call.arrays[name]
        expected = {index: self.grader.passes.expected(name, index) for index in spec_calls}
        for index, array in arrays.items():
            if not np.all(np.isfinite(array)):
                entry = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
                return f"it contains {array[entry]} at entry {entry} ({self.instances[index].label})", None
        if _right_values_wrong_shape(arrays, expected):
            index = spec_calls[0]
            got, want = arrays[index].shape, expected[index].shape
            reason = f"shape {got} where {want} is expected ({self.instances[index].label})"
            mistake = f"the values are right, but the array has shape {got}"
            return reason, f"{mistake}; a gradient has the shape of what it differentiates, {want}"
        for index, array in arrays.items():
            observed[index][name] = self._matrix(name, array)
        for index, array in arrays.items():
            if not same(array, expected[index], self._atol(index, name)):
                return self._difference(name, index, array, expected[index]), None
        return "", None

    def _matrix(self, name, array):
        """The student's array as the derivation's matrix, for the search (``views.py``)."""
        return derivation_value(self.grader.derivation.network, self.grader.passes.returned[name], array)

    def _atol(self, index, name) -> float:
        return self.grader.passes.atol[index][name]

    def _difference(self, name, index, array, expected) -> str:
        label = self.instances[index].label
        if array.shape != expected.shape:
            return f"shape {array.shape} where {expected.shape} is expected ({label})"
        entry = np.unravel_index(int(np.argmax(np.abs(array - expected))), array.shape)
        entry = tuple(int(i) for i in entry)
        got, want = _numbers(array[entry], expected[entry])
        text = f"entry {entry} is {got} where {want} is expected ({label})"
        dtype = self.run.calls[index].dtypes.get(name, "float64")
        if dtype != "float64":
            text += f"; the array is {dtype}, the grader expects float64 precision"
        return text

    def _attribute(self, explanation, outcomes):
        """Put each mutation's words on the first gradient it makes wrong; the others it changes say why."""
        catalogue, order = self.grader.catalogue, self.order
        own, because = {}, {}
        for mutation in explanation.mutations:
            changed = explanation.changes[mutation] & explanation.explained
            if not changed:
                continue
            first = next(name for name in order if name in changed)
            lhs, right = catalogue.lhs(mutation.step), catalogue.steps[mutation.step].expr
            own.setdefault(first, []).append(
                f"{lhs} = {catalogue.formula(mutation.expr)} ({self._your_code(lhs)}): {catalogue.formula(right)} "
                "was expected; "
                f"{'; and '.join(mutation.what)}")
            for name in changed - {first}:
                because.setdefault(name, []).append(f"{lhs} is wrong (see {first})")
        for name in own.keys() | because.keys():
            reason, _ = outcomes[name]
            upstream = " and ".join(because.get(name, []))
            if name in own:
                mistake = "; ".join(own[name]) + (f"; also wrong because {upstream}" if upstream else "")
            else:
                mistake = f"wrong because {upstream}"
            outcomes[name] = (reason, mistake)

    def _your_code(self, lhs: str) -> str:
        """Where the student's code computes ``lhs``, as a mistake's words say it."""
        return "your code"

    def _grade(self, outcomes) -> Grade:
        verdicts = tuple(GradientVerdict(name, "wrong" if reason else "correct", reason, mistake,
                                         self.grader.expected(name))
                         for name, (reason, mistake) in ((n, outcomes[n]) for n in self.order))
        return Grade(str(self.path), verdicts, tuple(self.context), tuple(self.notes))


def _missing(name, keys) -> str:
    text = f"the returned dict has no key '{name}'"
    close = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
    return text + (f" (it has '{close[0]}')" if close else "")


def _numbers(got, want) -> tuple[str, str]:
    """Two numbers printed with 6 significant digits, or with all 17 where 6 do not tell them apart."""
    short = f"{got:.6g}", f"{want:.6g}"
    return short if short[0] != short[1] else (f"{got:.17g}", f"{want:.17g}")


def _right_values_wrong_shape(arrays, expected) -> bool:
    """The same entries as expected, in an array with dimensions of length 1 dropped or added."""
    differs = [i for i, a in arrays.items() if a.shape != expected[i].shape]
    return bool(differs) and all(
        arrays[i].ndim != expected[i].ndim and arrays[i].size == expected[i].size
        and same(arrays[i].reshape(expected[i].shape), expected[i]) for i in arrays)


def _copies(params, cache, targets):
    """Arguments for the generated module's backward, which may write into arrays it is given."""
    return ({k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in cache.items()}, targets.copy())
