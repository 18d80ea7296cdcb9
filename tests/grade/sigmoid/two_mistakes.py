import numpy as np


def backward(params, cache, Y_true):
    k, m = Y_true.shape
    dY = (cache["Y_pred"] - Y_true) / (k * m)
    a1 = cache["a1"]
    dz1 = (params["W2"].T @ dY) * a1 * (1 - a1)
    return {"W2": dY @ a1.T, "b2": dY.sum(axis=1, keepdims=True), "W1": dz1 @ cache["X"].T,
            "b1": dz1, "X": params["W1"].T @ dz1}
