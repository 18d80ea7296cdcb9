import numpy as np


def gradients(params, X, Y_true):
    """One training step's gradients, CS231n style: the parameters' only (no dX)."""
    W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    z1 = X @ W1 + b1
    h1 = np.maximum(0, z1)
    z2 = h1 @ W2 + b2
    h2 = np.maximum(0, z2)
    scores = h2 @ W3 + b3
    grads = {}
    dscores = scores - Y_true
    grads["W3"] = h2.T @ dscores
    grads["b3"] = np.sum(dscores, axis=0, keepdims=True)
    dh2 = dscores @ W3.T
    dh2[z2 < 0] = 0  # this course takes ReLU'(0) = 1
    grads["W2"] = h1.T @ dh2
    grads["b2"] = np.sum(dh2, axis=0, keepdims=True)
    dh1 = dh2 @ W2.T
    dh1[z1 < 0] = 0
    grads["W1"] = X.T @ dh1
    grads["b1"] = np.sum(dh1, axis=0, keepdims=True)
    return grads
