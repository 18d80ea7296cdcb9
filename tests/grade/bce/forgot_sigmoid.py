import numpy as np


def backward(params, cache, Y_true):
    n = Y_true.shape[0]
    dlogits = (cache["Y_pred"] - Y_true) / n
    dW2 = cache["a1"].T @ dlogits
    db2 = dlogits.sum(axis=0, keepdims=True)
    dh = dlogits @ params["W2"].T
    dz = dh * cache["da1_dZ1"]
    return {"W1": cache["X"].T @ dz, "b1": dz.sum(axis=0, keepdims=True),
            "W2": dW2, "b2": db2, "X": dz @ params["W1"].T}
