import numpy as np


def backward(params, cache, Y_true):
    n = Y_true.size
    X, h, y = cache["X"], cache["a1"], cache["Y_pred"]
    dz2 = 2 * (y - Y_true) / n * (1 - y ** 2)
    dz1 = (dz2 @ params["W2"].T) * h
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0, keepdims=True), "W2": h.T @ dz2,
            "b2": dz2.sum(axis=0, keepdims=True), "X": dz1 @ params["W1"].T}
