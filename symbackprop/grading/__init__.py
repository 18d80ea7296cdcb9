"""Grade students' backpropagation code: which gradients are wrong, and which mistake makes each one wrong.

The student's file runs in a separate process (``runner.py``, ``child.py``) on seeded instances
(``instances.py``); each returned gradient is compared with the derivation's, and a wrong one is explained by
searching a catalogue of mistakes written as rewrites of the derivation's formulas (``mistakes.py``,
``diagnosis.py``). ``grade(path, spec)`` grades one file; a ``Grader`` grades many against one spec.
"""

from .grader import DEFAULT_TIME_LIMIT, GradeError, Grader, grade
from .report import Grade, GradientVerdict

__all__ = ["DEFAULT_TIME_LIMIT", "Grade", "GradeError", "Grader", "GradientVerdict", "grade"]
