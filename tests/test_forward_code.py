"""A forward pass written as code (``--forward``): derived, proved, and every gradient of the generated backward
against PyTorch autograd on the same forward pass rebuilt in torch (an independent oracle); unsupported code
refused with file:line:col."""

import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_generated import load_module

from symbackprop import derive
from symbackprop.cli import main
from symbackprop.forward_code import ForwardCodeError, load_forward

ATOMIC = Path(__file__).parent / "forward_code" / "atomic.py"


def _torch_gradients(inputs):
    """The atomic forward pass rebuilt in torch (as a student would write it), every value's .grad."""
    torch = pytest.importorskip("torch")
    t = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in inputs.items()}
    X, Y, W1, b1, bngain, bnbias, W2, b2 = (t[k] for k in ("X", "Y", "W1", "b1", "bngain", "bnbias", "W2", "b2"))
    n = X.shape[0]
    values = {}
    values["hprebn"] = hprebn = X @ W1 + b1
    values["bnmeani"] = bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
    values["bndiff"] = bndiff = hprebn - bnmeani
    values["bndiff2"] = bndiff2 = bndiff ** 2
    values["bnvar"] = bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdim=True)
    values["bnvar_inv"] = bnvar_inv = (bnvar + 1e-5) ** -0.5
    values["bnraw"] = bnraw = bndiff * bnvar_inv
    values["hpreact"] = hpreact = bngain * bnraw + bnbias
    values["h"] = h = torch.tanh(hpreact)
    values["logits"] = logits = h @ W2 + b2
    values["logit_maxes"] = logit_maxes = logits.max(1, keepdim=True).values
    values["norm_logits"] = norm_logits = logits - logit_maxes
    values["counts"] = counts = norm_logits.exp()
    values["counts_sum"] = counts_sum = counts.sum(1, keepdim=True)
    values["counts_sum_inv"] = counts_sum_inv = counts_sum ** -1
    values["probs"] = probs = counts * counts_sum_inv
    values["logprobs"] = logprobs = probs.log()
    values["picked"] = picked = (logprobs * Y).sum(1, keepdim=True)
    loss = -picked.mean()
    for value in values.values():
        value.retain_grad()
    loss.backward()
    grads = {f"d{name}": value.grad.numpy() for name, value in {**t, **values}.items()}
    return float(loss.detach()), grads


def test_atomic_forward_pass_is_proved_and_every_gradient_matches_autograd(tmp_path):
    derivation = derive(forward=ATOMIC)
    report = derivation.verify()
    assert report.ok, report.table()
    names = {step.name for step in derivation.backward}
    assert {"X", "Y", "W1", "b1", "bngain", "bnbias", "W2", "b2", "bnvar_inv", "logit_maxes", "picked"} <= names
    module = load_module(derivation.render("numpy"), tmp_path, "generated_forward")
    rng = np.random.default_rng(0)
    inputs = module.random_inputs(3)
    inputs["Y"] = np.eye(27)[rng.integers(0, 27, 32)]  # one-hot targets
    loss, cache = module.forward(inputs)
    grads = module.backward(cache)
    torch_loss, expected = _torch_gradients(inputs)
    assert loss == pytest.approx(torch_loss, rel=1e-12)
    assert set(grads) == set(expected)
    for key, value in expected.items():
        assert grads[key].shape == value.shape, key
        np.testing.assert_allclose(grads[key], value, rtol=1e-7, atol=1e-10, err_msg=key)
    assert module.gradient_check() < 1e-5


def test_log_sum_exp_softmax_relu_and_sqrt(tmp_path):
    path = tmp_path / "lse.py"
    path.write_text(textwrap.dedent('''
        import numpy as np
        SHAPES = {"X": ("N", "d"), "T": ("N", "k"), "W": ("d", "k"), "b": (1, "k")}

        def forward(X, T, params):
            W, b = params
            z = np.maximum(X @ W + b, 0)
            s = np.sqrt(z * z + 1)
            lse = np.log(np.exp(s).sum(axis=1, keepdims=True))
            logp = s - lse
            loss = -(logp * T).sum() / X.shape[0]
            return loss
    '''))
    derivation = derive(forward=path)
    assert derivation.verify().ok
    module = load_module(derivation.render("numpy"), tmp_path, "generated_forward")
    torch = pytest.importorskip("torch")
    inputs = module.random_inputs(1)
    loss, cache = module.forward(inputs)
    grads = module.backward(cache)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
    z = torch.relu(t["X"] @ t["W"] + t["b"])
    z.retain_grad()
    s = torch.sqrt(z * z + 1)
    logp = s - torch.logsumexp(s, dim=1, keepdim=True)
    expected = -(logp * t["T"]).sum() / inputs["X"].shape[0]
    expected.backward()
    assert loss == pytest.approx(float(expected))
    for name in ("X", "T", "W", "b"):
        np.testing.assert_allclose(grads[f"d{name}"], t[name].grad.numpy(), rtol=1e-7, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(grads["dz"], z.grad.numpy(), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize(("body", "where", "words"), [
    ("    for i in range(3):\n        a = X @ W\n", "4:5", "a loop (for)"),
    ("    if True:\n        a = X @ W\n", "4:5", "an if statement"),
    ("    a = np.cosh(X @ W)\n", "4:9", "unknown call np.cosh()"),
    ("    a = X @ W\n    a += 1\n", "5:5", "in-place mutation"),
    ("    a = X @ V\n", "4:13", "undefined name 'V'"),
    ("    a = X @ X\n", "4:9", "cannot multiply"),
    ("    a = X[0] @ W\n", "4:9", "indexing is not supported yet"),
])
def test_unsupported_code_is_refused_with_its_place(tmp_path, body, where, words):
    path = tmp_path / "bad.py"
    path.write_text('SHAPES = {"X": ("N", "d"), "W": ("d", "k")}\n\ndef forward(X, W):\n' + body
                    + "    loss = a.sum()\n    return loss\n")
    with pytest.raises(ForwardCodeError) as error:
        load_forward(path)
    assert str(error.value).startswith(f"{path}:{where}: ")
    assert words in str(error.value)


def test_a_missing_shape_is_named(tmp_path):
    path = tmp_path / "noshape.py"
    path.write_text('SHAPES = {"X": ("N", "d")}\n\ndef forward(X, W):\n    a = X @ W\n    loss = a.sum()\n'
                    "    return loss\n")
    with pytest.raises(ForwardCodeError, match=r"noshape.py:4:13: cannot infer the shape of input 'W': add it to SHAPES"):
        load_forward(path)


def test_cli_writes_md_and_py_and_refuses_lecture_formats(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["derive", "--forward", str(ATOMIC), "--out", str(tmp_path / "out"), "-q",
                                  "--sizes", "N=8,d=3"])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["backprop.md", "backprop.py"]
    module_text = (tmp_path / "out" / "backprop.py").read_text()
    assert "'N': 8" in module_text and "'dbnvar_inv': dbnvar_inv" in module_text
    assert "dL/dbnvar_inv" not in module_text
    assert "### dbnvar_inv" in (tmp_path / "out" / "backprop.md").read_text()
    refused = runner.invoke(main, ["derive", "--forward", str(ATOMIC), "--out", str(tmp_path / "o2"),
                                   "--format", "beamer"])
    assert refused.exit_code == 2
    assert "md or py only" in refused.stderr and "Traceback" not in refused.output
    bad = tmp_path / "bad.py"
    bad.write_text("def forward(X):\n    while True:\n        pass\n    return X\n")
    failed = runner.invoke(main, ["derive", "--forward", str(bad), "--out", str(tmp_path / "o3")])
    assert failed.exit_code == 2
    assert failed.stderr.strip() == f"symbackprop: error: {bad}:2:5: a loop (while) is not supported: the forward " \
                                    "pass must be straight-line assignments"
