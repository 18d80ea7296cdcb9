"""The arrays a student's code sees and returns, and the derivation's matrices they stand for.

The derivation keeps every value a matrix. A student's code uses the shapes PyTorch and CS231n use, as the
generated module does: an image batch ``(N, C, H, W)`` (a signal ``(N, C, L)``), a convolution kernel
``(F, C, kh, kw)`` (``(F, C, k)``), a sequence input ``(N, T, d)``. ``student_value`` gives a matrix the shape the
student's code sees; ``derivation_value`` turns what it returns back into the matrix, so that the search for
mistakes compares matrices with matrices (an image gradient of another size too, such as a dX with its
padding left on: its rows are still the samples).
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp

from ..codegen import module_value
from ..layers import CONV_KINDS, POOL_KINDS, image_output


def image_shapes(network) -> dict:
    """The image shape ``(C, H, W)`` (or ``(C, L)``) of each quantity that holds one image per sample (the input,
    a convolution's pre-activation and output, a pooling's output, an activation of an image), by name."""
    spec = network.spec
    image = spec.input.shape
    if image is None:
        return {}
    shapes, after = {spec.input.name: image}, {}
    for l, layer in enumerate(spec.layers, start=1):
        if layer.kind == "flatten":
            image = None
        elif layer.kind in CONV_KINDS or layer.kind in POOL_KINDS:
            image = image_output(layer)
        after[l] = image
    for step in network.steps:
        image = after.get(step.layer)
        if image is not None and isinstance(step.symbol, sp.MatrixSymbol) \
                and tuple(step.symbol.shape) == (network.N, math.prod(image)):
            shapes[step.name] = image
    return shapes


def student_value(network, name: str, value: np.ndarray, images: dict | None = None) -> np.ndarray:
    """The matrix ``value`` of the quantity ``name`` (or its gradient) as the student's code has it: the input
    as the generated module takes it, a kernel ``(F, C, kh, kw)``, one of ``images`` (``image_shapes``) as
    ``(N, C, H, W)``; other values as they are."""
    if name == network.input_name:
        return module_value(network, name, value)
    if name in network.module_shapes:
        return value.reshape(network.module_shapes[name])
    if images and name in images:
        return value.reshape(-1, *images[name])
    return value


def derivation_value(network, name: str, array: np.ndarray) -> np.ndarray:
    """What the student's code returned for the gradient of ``name``, as the derivation's matrix: an image or
    a kernel with each sample's (each filter's) entries in one row, a sequence stacked by step; an array of
    another number of dimensions as it is."""
    if name in network.module_shapes:
        dims = len(network.module_shapes[name]) + (1 if name == network.input_name else 0)  # the input's: N
        if array.ndim != dims:
            return array
        matrix = network.inputs[name].shape if name in network.inputs else ()
        if matrix and name != network.input_name and all(isinstance(d, sp.Integer) for d in matrix):  # a kernel, a bias
            return array.reshape(tuple(int(d) for d in matrix))
        return array.reshape(len(array), -1)
    if name == network.input_name and network.spec.input.steps and array.ndim == 3 \
            and network.inputs[name].shape[0] != network.N:
        return array.swapaxes(0, 1).reshape(-1, array.shape[-1])
    return array
