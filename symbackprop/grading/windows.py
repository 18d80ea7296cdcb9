"""The classic mistakes of a convolution or pooling backward pass, as nodes the grader's catalogue puts into the
derivation's formulas (``mistakes.py``) and evaluates in float64 (``MistakeEvaluator``).

The derivation's image operators (``expressions.Im2col``, ``Col2im``, ``MaxMask``) are right by construction;
these are what a student's loops compute instead: the kernel flipped (a true convolution where the forward
pass computes PyTorch's cross-correlation), the stride left out of the backward pass's indices, the padding
left on dX, every tied maximum of a pooling window given the gradient. Each node prints as the wrong formula
(``flip(W1)``), and the catalogue's words say what it does.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import sympy as sp
from numpy.lib.stride_tricks import sliding_window_view
from sympy.matrices.expressions import MatrixExpr

from .. import images
from ..evaluate import Evaluator
from ..expressions import Col2im, Im2col, MaxMask, _Printed, _Windowed


class _Mistaken:
    """A node whose float64 value is ``evaluate`` applied to its argument's value."""

    def evaluate(self, value: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Flipped(_Mistaken, _Windowed):
    """``arg``'s columns ``(c, i, j)`` taken at ``(c, kh - 1 - i, kw - 1 - j)``: each kernel (of a kernel matrix
    ``F x C kh kw``, or of im2col's patches) turned by 180 degrees."""

    shape = property(lambda self: self.arg.shape)

    def evaluate(self, value):
        w = self.window
        return value.reshape(len(value), w.channels, *w.kernel)[:, :, ::-1, ::-1].reshape(value.shape)


class Unstrided(_Mistaken, _Windowed):
    """``im2col(arg)`` with each patch read at ``(y + i, x + j)`` instead of ``(y s + i, x s + j)``: the stride
    left out of a backward loop's indices (as many positions as the strided im2col has)."""

    shape = property(lambda self: Im2col(self.arg, self.window).shape)

    def evaluate(self, value):
        w = self.window
        (ph, pw), (Ho, Wo) = w.padding, w.out
        x = np.pad(value.reshape(len(value), w.channels, w.height, w.width), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        windows = sliding_window_view(x, w.kernel, axis=(2, 3))[:, :, :Ho, :Wo]
        if w.per_channel:
            return windows.reshape(-1, w.taps)
        return windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, w.patch)


class UnstridedCol2im(_Mistaken, _Windowed):
    """``col2im(arg)`` with each row's entries added at ``(y + i, x + j)`` instead of ``(y s + i, x s + j)``:
    the adjoint of ``Unstrided``."""

    shape = property(lambda self: (self.arg.shape[0] / self.window.rows_per_sample, self.window.size))

    def evaluate(self, value):
        w = self.window
        (kh, kw), (ph, pw), (Ho, Wo) = w.kernel, w.padding, w.out
        if w.per_channel:
            patches = value.reshape(-1, w.channels, Ho, Wo, kh, kw)
        else:
            patches = value.reshape(-1, Ho, Wo, w.channels, kh, kw).transpose(0, 3, 1, 2, 4, 5)
        x = np.zeros((len(patches), w.channels, w.height + 2 * ph, w.width + 2 * pw))
        for i in range(kh):
            for j in range(kw):
                x[:, :, i:i + Ho, j:j + Wo] += patches[..., i, j]
        return x[:, :, ph:ph + w.height, pw:pw + w.width].reshape(len(x), -1)


class Uncropped(_Mistaken, _Windowed):
    """``col2im(arg)`` with the padding left on: each sample's gradient over the padded image,
    ``C (H + 2 p_h) (W + 2 p_w)`` entries."""

    @property
    def shape(self):
        padded = padded_window(self.window)
        return (self.arg.shape[0] / padded.rows_per_sample, padded.size)

    def evaluate(self, value):
        return images.col2im(value, padded_window(self.window))


class TiedMaxMask(_Mistaken, _Printed, MatrixExpr):
    """1 at every maximum of each row (each tied maximum of a pooling window), 0 elsewhere."""

    def __new__(cls, arg):
        return super().__new__(cls, arg)

    arg = property(lambda self: self.args[0])
    shape = property(lambda self: self.arg.shape)

    def evaluate(self, value):
        return (value == value.max(axis=1, keepdims=True)).astype(float)


def padded_window(window: images.Window) -> images.Window:
    """The same kernel and stride over the zero-padded image, with no padding of its own."""
    (ph, pw) = window.padding
    return dataclasses.replace(window, height=window.height + 2 * ph, width=window.width + 2 * pw, padding=(0, 0))


class MistakeEvaluator(Evaluator):
    """The float64 ``Evaluator`` that also evaluates the mistake nodes."""

    def __call__(self, expr):
        if isinstance(expr, _Mistaken):
            return expr.evaluate(np.asarray(self(expr.arg), dtype=float))
        return super().__call__(expr)


def windows_of(network) -> tuple[dict, dict]:
    """The network's kernels, name -> window (``W1``), and its im2col patches, name -> (window, the image they
    are read from) (``Xcol1``: im2col of ``X``; ``Pcol2``: a pooling's, per channel)."""
    kernels, patches = {}, {}
    for step in network.steps:
        if isinstance(step.expr, Im2col):
            window = step.expr.window
            patches[step.symbol.name] = (window, step.expr.arg)
            for other in network.steps if not window.per_channel else ():
                if other.layer == step.layer and step.symbol in other.expr.atoms(sp.MatrixSymbol):
                    kernels.update({s.name: window for s in other.expr.atoms(sp.MatrixSymbol)
                                    if s.name in network.module_shapes and s.name != network.input_name})
    return kernels, patches


def window_mistakes(node, kernels: dict, patches: dict):
    """The classic mistakes of a convolution or pooling backward pass at ``node`` of a formula: pairs of the
    node a student's code computes instead and the words for it."""
    if isinstance(node, sp.MatrixSymbol) and node.name in kernels and kernels[node.name].taps > 1:
        yield Flipped(node, kernels[node.name]), (
            f"the kernel is flipped: {node.name}[f, c, {_flipped(kernels[node.name])}] where {node.name}[f, c, "
            f"{_indices(kernels[node.name])}] belongs (a true convolution, where the forward pass computes a "
            "cross-correlation, as PyTorch's convolutions do)")
    if isinstance(node, sp.MatrixSymbol) and node.name in patches:
        window, image = patches[node.name]
        if not window.per_channel and window.taps > 1:
            yield Flipped(node, window), (
                f"the kernel's gradient is flipped: what belongs to dW[f, c, {_indices(window)}] goes to "
                f"dW[f, c, {_flipped(window)}] (a true convolution of the input with the upstream gradient, where "
                "the forward pass computes a cross-correlation)")
        if window.stride != (1, 1):
            yield Unstrided(image, window), (
                f"the stride ({_pair(window, window.stride)}) is left out of the backward pass: {image.name} is read "
                f"at {_place(window, False)} where the forward pass read it at {_place(window, True)}")
    if isinstance(node, Col2im) and node.window.stride != (1, 1):
        yield UnstridedCol2im(node.arg, node.window), (
            f"the stride ({_pair(node.window, node.window.stride)}) is left out of the backward pass: each patch's "
            f"gradient is added at {_place(node.window, False)} where the forward pass read the patch at "
            f"{_place(node.window, True)}")
    if isinstance(node, Col2im) and node.window.padding != (0, 0):
        window = node.window
        yield Uncropped(node.arg, window), (
            f"the padding is not cropped from the gradient: it is {_size(padded_window(window))} (the padded "
            f"input's size) where the input is {_size(window)}")
    if isinstance(node, MaxMask) and getattr(node.arg, "name", None) in patches:  # a pooling's, not a row max's
        ones = sp.OneMatrix(*node.shape)
        yield TiedMaxMask(node.arg), ("every tied maximum of a pooling window gets the gradient, where only the "
                                      "first maximum in row-major order does (the convention of this spec, and of "
                                      "PyTorch's max pooling on the CPU)")
        yield ones, "the pooled gradient is copied to every entry of its window, where only the window's maximum gets it"
        yield sp.MatMul(1 / sp.sympify(node.shape[1]), ones), (
            "the pooled gradient is spread equally over its window (average pooling's gradient), where only the "
            "window's maximum gets it")


def _signal(window) -> bool:
    """A one-dimensional signal's window (height 1), whose indices and sizes are written along its length."""
    return window.height == 1 and window.kernel[0] == 1


def _pair(window, pair) -> str:
    return f"{pair[1]}" if _signal(window) else f"{pair[0]}, {pair[1]}"


def _indices(window) -> str:
    return "i" if _signal(window) else "i, j"


def _flipped(window) -> str:
    kh, kw = window.kernel
    return f"{kw - 1}-i" if _signal(window) else f"{kh - 1}-i, {kw - 1}-j"


def _place(window, strided: bool) -> str:
    sh, sw = window.stride if strided else (1, 1)
    y, x = (f"{sh}y" if sh != 1 else "y"), (f"{sw}x" if sw != 1 else "x")
    return f"({x} + i)" if _signal(window) else f"({y} + i, {x} + j)"


def _size(window) -> str:
    return f"length {window.width}" if _signal(window) else f"{window.height} x {window.width}"
