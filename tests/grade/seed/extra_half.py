import numpy as np


def backward(params, cache, Y_true):
    # L = 1/2 sum (y - t)^2, so dL/dy = 1/2 (y - t)
    dy = 0.5 * (cache["Y_pred"] - Y_true)
    out = {"W3": cache["a2"].T @ dy, "b3": np.sum(dy, axis=0, keepdims=True)}
    d2 = dy @ params["W3"].T * cache["da2_dZ2"]
    out["W2"] = cache["a1"].T @ d2
    out["b2"] = np.sum(d2, axis=0, keepdims=True)
    d1 = d2 @ params["W2"].T * cache["da1_dZ1"]
    out["W1"] = cache["X"].T @ d1
    out["b1"] = np.sum(d1, axis=0, keepdims=True)
    out["X"] = d1 @ params["W1"].T
    return out
