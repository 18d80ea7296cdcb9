import numpy as np


def backward(params, cache, Y_true):
    grads = {name: np.full_like(value, np.nan) for name, value in params.items()}   # filled in below
    d3 = cache["Y_pred"] - Y_true
    d2 = (d3 @ params["W3"].T) * cache["da2_dZ2"]
    d1 = (d2 @ params["W2"].T) * cache["da1_dZ1"]
    grads["W3"], grads["b3"] = cache["a2"].T @ d3, d3.sum(axis=0, keepdims=True)
    grads["W2"], grads["b2"] = cache["a1"].T @ d2, d2.sum(axis=0, keepdims=True)
    grads["W1"] = cache["X"].T @ d1          # TODO b1
    grads["X"] = d1 @ params["W1"].T
    return grads
