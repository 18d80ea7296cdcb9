import numpy as np


def backward(params, cache, Y_true):
    n = Y_true.size
    X, h, y = cache["X"], cache["a1"], cache["Y_pred"]
    dy = 2 * (y - Y_true) / n
    dW2 = h.T @ dy
    db2 = dy.sum(axis=0, keepdims=True)
    dh = dy @ params["W2"].T
    dz = dh * (1 - h ** 2)
    return {"W1": X.T @ dz, "b1": dz.sum(axis=0, keepdims=True), "W2": dW2, "b2": db2, "X": dz @ params["W1"].T}
