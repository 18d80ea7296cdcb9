import numpy as np


def backward(params, cache, Y_true):
    X, a1, a2, a3, y = cache["X"], cache["a1"], cache["a2"], cache["a3"], cache["Y_pred"]
    W2, W3, W4 = params["W2"], params["W3"], params["W4"]
    n = y.size
    d4 = (y - Y_true) / n                     # the 2 of the square is dropped
    d3 = (d4 @ W4.T) * a3 * (1 - a3)
    d2 = (d3 @ W3.T) * (1 - a2 ** 2)
    d1 = (d2 @ W2.T) * cache["da1_dZ1"]
    return {"W4": a3.T @ d4, "b4": d4.sum(axis=0, keepdims=True),
            "W3": a2.T @ d3, "b3": d3.sum(axis=0, keepdims=True),
            "W2": a2.T @ d2, "b2": d2.sum(axis=0, keepdims=True),
            "W1": X.T @ d1, "b1": d1.sum(axis=0, keepdims=True), "X": d1 @ params["W1"].T}
