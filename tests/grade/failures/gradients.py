import numpy as np


def gradients(params, X, Y_true):
    """Forward and backward pass in one function."""
    W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    Z1 = X @ W1 + b1
    A1 = np.maximum(Z1, 0)
    Z2 = A1 @ W2 + b2
    A2 = np.maximum(Z2, 0)
    Y = A2 @ W3 + b3
    dZ3 = Y - Y_true
    dZ2 = dZ3 @ W3.T * (Z2 >= 0)
    dZ1 = dZ2 @ W2.T * (Z1 >= 0)
    return {"W3": Z2.T @ dZ3, "b3": dZ3.sum(axis=0, keepdims=True),
            "W2": A1.T @ dZ2, "b2": dZ2.sum(axis=0, keepdims=True),
            "W1": X.T @ dZ1, "b1": dZ1.sum(axis=0, keepdims=True), "X": dZ1 @ W1.T}
