import numpy as np


def backward(params, cache, Y_true):
    X, h, y = cache["X"], cache["a1"], cache["Y_pred"]
    dz2 = (y - Y_true) / len(X) * (1 - y ** 2)
    dz1 = (dz2 @ params["W2"].T) * (1 - h ** 2)
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0, keepdims=True), "W2": h.T @ dz2,
            "b2": dz2.sum(axis=0, keepdims=True), "X": dz1 @ params["W1"].T}
