import numpy as np


def backward(params, cache, Y_true):
    d3 = cache["Y_pred"] - Y_true
    d2 = (d3 @ params["W3"].T) * cache["da2_dZ2"]
    d1 = (d2 @ params["W2"].T) * cache["da1_dZ1"]
    return {"W3": cache["a2"].T @ d3, "b3": d3.sum(axis=0, keepdims=True),
            "W2": cache["a1"].T @ d2, "b2": d2.sum(axis=0, keepdims=True),
            "W1": cache["X"].T @ d1, "b1": np.sum(d1, axis=0), "X": d1 @ params["W1"].T}
