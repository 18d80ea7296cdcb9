import numpy as np


def backward(params, cache, Y_true):
    W1, b1, W2 = params["W1"], params["b1"], params["W2"]
    X = cache["X"]
    z1 = X @ W1 + b1
    d2 = cache["Y_pred"] - Y_true
    d1 = (d2 @ W2.T) * (z1 >= 0)
    return {"W1": X.T @ d1, "b1": d1.sum(axis=0, keepdims=True), "W2": cache["a1"].T @ d2,
            "b2": d2.sum(axis=0, keepdims=True), "X": d1 @ W1.T}
