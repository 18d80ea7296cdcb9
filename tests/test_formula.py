"""The formula language of custom activations: what it reads (against SymPy expressions built directly), what
it refuses (injection attempts and malformed formulas, each with its column), and its NumPy printer (against
SymPy's own high-precision values, stable for |z| up to 1000, keeping float32)."""

from math import erf

import numpy as np
import pytest
import sympy as sp

from symbackprop.formula import MAX_DEPTH, FormulaError, Z, numpy_code, parse, sigmoid, softplus, stabilized

z = Z
beta = sp.Symbol("beta", real=True)


@pytest.mark.parametrize("text, expected", [
    ("z", z),
    ("-z**2", -(z**2)),
    ("2**-z", 2 ** (-z)),
    ("z**2**2", z**4),
    ("1 + 2*z**2/3 - z", 1 + sp.Rational(2, 3) * z**2 - z),
    ("(1 + z) * (1 - z)", (1 + z) * (1 - z)),
    ("1.5e-1 * z + .5", sp.Rational(3, 20) * z + sp.Rational(1, 2)),
    ("z * sigmoid(beta * z)", z / (1 + sp.exp(-beta * z))),
    ("softplus(z) - log(1 + exp(z))", 0),
    ("softplus(2) * z + sigmoid(-1)", sp.log(1 + sp.exp(2)) * z + 1 / (1 + sp.E)),
    ("log1p(z**2)", sp.log(1 + z**2)),
    ("sqrt(1 + z**2)", sp.sqrt(1 + z**2)),
    ("erf(z) + sin(z) * cos(z) + tanh(z)", sp.erf(z) + sp.sin(z) * sp.cos(z) + sp.tanh(z)),
    ("abs(z) + min(z, 0, -1) + max(z, 1)", sp.Abs(z) + sp.Min(z, 0, -1) + sp.Max(z, 1)),
    ("where(z <= -1, -1, where(z >= 1, 1, z))",
     sp.Piecewise((-1, z <= -1), (sp.Piecewise((1, z >= 1), (z, True)), True))),
    ("where(2 * z > beta, z, 0)", sp.Piecewise((z, 2 * z > beta), (0, True))),
])
def test_formulas_parse_to_the_sympy_expression(text, expected):
    parsed = parse(text, {"beta": 1.5})
    difference = (parsed - expected).replace(lambda e: isinstance(e, (sigmoid, softplus)), lambda e: e.elementary())
    assert sp.simplify(difference) == 0


@pytest.mark.parametrize("text, column, fragment", [
    ("z.real", 2, "attribute access"),
    ("exp(z).__class__", 7, "attribute access"),
    ("z * __import__('os')", 5, "cannot start with '_'"),
    ("__builtins__", 1, "cannot start with '_'"),
    ("open(z)", 1, "not a function"),
    ("eval(z)", 1, "not a function"),
    ("beta(z)", 1, "a variable, not a function"),
    ("exp", 1, "is a function"),
    ("lambda", 1, "unknown name 'lambda'"),
    ("import os", 1, "unknown name 'import'"),
    ("z if z else 0", 3, "expected an operator"),
    ("'z'", 1, "string literals"),
    ('f"z"', 2, "string literals"),
    ("[z]", 1, "indexing"),
    ("z == 1", 3, "only the comparisons"),
    ("z; 1", 2, "unexpected character ';'"),
    ("z # comment", 3, "unexpected character '#'"),
    ("{z}", 1, "unexpected character '{'"),
    ("1j * z", 2, "expected an operator"),
    ("ｚ", 1, "U+FF5A"),
    ("еxp(z)", 1, "U+0435"),  # Cyrillic e
    ("z\u200b", 2, "U+200B"),
    ("z\n+ 1", 2, "unexpected character '\\n'"),
    ("z ** 100", 3, "constant exponent"),
    ("10 ** 10 ** 10", 4, "constant exponent"),
    ("1e400 * z", 1, "numbers are limited"),
    ("123456789012345678901234567890 * z", 1, "numbers are limited"),
    ("z / 0", 5, "division by zero"),
    ("where(log(0) > 1, z, 0)", 7, "log(0) is not a finite real number"),
    ("sqrt(-1) * z", 1, "sqrt(-1) is not a finite real number"),
    ("z + (-8) ** 0.5", 10, "(-8)**(1/2) is not a finite real number"),
    ("z + 0 ** -1", 7, "(0)**(-1) is not a finite real number"),
    ("z < 1", 3, "a comparison is only allowed"),
    ("max(z < 1, 0)", 7, "a comparison is only allowed"),
    ("where(z, 1, 2)", 8, "needs a comparison"),
    ("where(z < 0, 1)", 1, "takes 3 arguments"),
    ("min(z)", 1, "two or more"),
    ("tanh(z, z)", 1, "takes 1 argument"),
    ("(z", 3, "expected ')'"),
    ("z)", 2, "expected an operator"),
    ("z +", 4, "expected a number"),
    ("", 1, "empty"),
    ("e ** z", 1, "unknown name 'e'"),
    ("gamma * z", 1, "parameters = { gamma = <number> }"),
])
def test_text_outside_the_language_is_an_error_naming_its_column(text, column, fragment):
    with pytest.raises(FormulaError) as caught:
        parse(text, {"beta": 1.5})
    assert caught.value.column == column, caught.value
    assert fragment in caught.value.message, caught.value.message


@pytest.mark.parametrize("text", ["(" * 100 + "z" + ")" * 100, "-" * 300 + "z", "z" + "**z" * 100,
                                  "exp(" * 60 + "z" + ")" * 60])
def test_deep_nesting_is_refused_without_exhausting_the_stack(text):
    with pytest.raises(FormulaError, match=f"nested too deeply \\(more than {MAX_DEPTH} levels\\)"):
        parse(text)


def test_a_long_formula_is_refused_before_it_is_read():
    with pytest.raises(FormulaError, match="at most 400"):
        parse("(" * 5000 + "z" + ")" * 5000)


def test_stable_forms_are_identities():
    for text in ("log(1 + exp(2*z))", "1 / (1 + exp(-z))", "z / (exp(z) + 1)"):
        expr = parse(text)
        assert stabilized(expr) != expr
        assert sp.simplify((stabilized(expr) - expr).replace(
            lambda e: isinstance(e, (sigmoid, softplus)), lambda e: e.elementary())) == 0


NUMPY_CASES = [
    "z * tanh(log(1 + exp(z)))", "z * sigmoid(1.5 * z)", "softplus(z) - log1p(z**2)",
    "where(z > 0, 1.05 * z, 1.05 * 1.67 * (exp(z) - 1))", "where(z < -1, -1, where(z > 1, 1, z))",
    "z / (1 + abs(z))", "(z + sqrt(z**2 + 4)) / 2", "where(z > 0, log(1 + z), -log(1 - z))",
    "z * (1 + erf(z / sqrt(2))) / 2", "min(z, 0) + max(2 * z, z / 3) + 2**-z**2",
]


def _erf(x):
    """The error function entrywise in the dtype of ``x``, as the generated module defines it."""
    return np.vectorize(erf, otypes=[x.dtype])(x)


def _function(code):
    return eval(f"lambda z: {code}", {"np": np, "erf": _erf})


@pytest.mark.parametrize("text", NUMPY_CASES)
@pytest.mark.parametrize("order", [0, 1])
def test_numpy_code_matches_sympy(text, order):
    expr = stabilized(parse(text))
    if order:
        expr = sp.diff(expr.rewrite(sp.Piecewise), z)
    points = np.array([-7.3, -2.5, -1.2, -0.4, 0.3, 0.9, 1.6, 4.1])
    numeric = _function(numpy_code(expr, z="z"))(points)
    elementary = expr.replace(lambda e: isinstance(e, (sigmoid, softplus)), lambda e: e.elementary())
    expected = [float(elementary.subs(z, sp.Rational(str(p))).evalf(30)) for p in points]
    np.testing.assert_allclose(numeric, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("text", NUMPY_CASES)
@pytest.mark.parametrize("order", [0, 1])
def test_numpy_code_is_finite_for_large_arguments_and_keeps_float32(text, order):
    expr = stabilized(parse(text))
    if order:
        expr = sp.diff(expr.rewrite(sp.Piecewise), z)
    function = _function(numpy_code(expr, z="z"))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        values = function(np.linspace(-1000, 1000, 41))
    assert np.all(np.isfinite(values))
    assert function(np.linspace(-3, 3, 7, dtype=np.float32)).dtype == np.float32


def test_a_constant_derivative_is_an_array_of_the_dtype_of_z():
    function = _function(numpy_code(sp.Integer(3), z="z"))
    assert function(np.zeros(4, dtype=np.float32)).tolist() == [3.0] * 4
    assert function(np.zeros(4, dtype=np.float32)).dtype == np.float32
