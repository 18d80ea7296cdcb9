import numpy as np


def backward(params, cache, Y_true):
    m = Y_true.shape[0]
    dZ3 = (cache["Y_pred"] - Y_true) / m
    dZ2 = dZ3 @ params["W3"].T * cache["da2_dZ2"]
    dZ1 = dZ2 @ params["W2"].T * cache["da1_dZ1"]
    return {"W3": cache["a2"].T @ dZ3, "b3": dZ3.sum(axis=0, keepdims=True),
            "W2": cache["a1"].T @ dZ2, "b2": dZ2.sum(axis=0, keepdims=True),
            "W1": cache["X"].T @ dZ1, "b1": dZ1.sum(axis=0, keepdims=True),
            "X": dZ1 @ params["W1"].T}
