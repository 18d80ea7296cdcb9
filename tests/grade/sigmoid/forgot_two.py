import numpy as np


def backward(params, cache, Y_true):
    k, m = Y_true.shape
    dY = (cache["Y_pred"] - Y_true) / (k * m)
    a1 = cache["a1"]
    dW2 = dY @ a1.T
    db2 = dY.sum(axis=1, keepdims=True)
    dz1 = (params["W2"].T @ dY) * a1 * (1 - a1)
    return {"W2": dW2, "b2": db2, "W1": dz1 @ cache["X"].T, "b1": dz1.sum(axis=1, keepdims=True),
            "X": params["W1"].T @ dz1}
