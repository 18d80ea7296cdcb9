import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def backward(params, cache, Y_true):
    k, m = Y_true.shape
    dY = 2.0 * (cache["Y_pred"] - Y_true) / (k * m)
    A1 = cache["a1"]
    s = sigmoid(A1)
    dZ1 = (params["W2"].T @ dY) * s * (1 - s)
    return {"W2": dY @ A1.T, "b2": dY.sum(axis=1, keepdims=True), "W1": dZ1 @ cache["X"].T,
            "b1": dZ1.sum(axis=1, keepdims=True), "X": params["W1"].T @ dZ1}
