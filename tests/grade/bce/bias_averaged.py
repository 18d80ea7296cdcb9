import numpy as np


def backward(params, cache, Y_true):
    N = Y_true.shape[0]
    p = 1 / (1 + np.exp(-cache["Y_pred"]))
    delta2 = (p - Y_true) / N
    delta1 = delta2 @ params["W2"].T * cache["da1_dZ1"]
    return {
        "W2": cache["a1"].T @ delta2,
        "b2": delta2.mean(axis=0, keepdims=True),
        "W1": cache["X"].T @ delta1,
        "b1": delta1.sum(axis=0, keepdims=True),
        "X": delta1 @ params["W1"].T,
    }
