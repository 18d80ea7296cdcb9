import numpy as np


def backward(params, cache, Y_true):
    d3 = cache["Y_pred"] - Y_true
    d2 = (d3 @ params["W3"].T) * cache["da2_dZ2"]
    d1 = (d2 @ params["W2"].T) * cache["da1_dZ1"]
    return {"dW3": cache["a2"].T @ d3, "db3": d3.sum(axis=0, keepdims=True),
            "dW2": cache["a1"].T @ d2, "db2": d2.sum(axis=0, keepdims=True),
            "dW1": cache["X"].T @ d1, "db1": d1.sum(axis=0, keepdims=True), "X": d1 @ params["W1"].T}
