import numpy as np


def backward(params, cache, Y_true):
    W1, W3 = params["W1"], params["W3"]
    X, mask, h2 = cache["X"], cache["M2"], cache["a2"]
    d_out = cache["Y_pred"] - Y_true
    grads = {"W3": h2.T @ d_out, "b3": np.sum(d_out, axis=0, keepdims=True)}
    d_h2 = d_out @ W3.T
    d_h1 = d_h2 * mask / 0.5 / 0.5  # 1 - p = 0.5, divided by twice
    d_z1 = d_h1 * cache["da1_dZ1"]
    grads["W1"] = X.T @ d_z1
    grads["b1"] = np.sum(d_z1, axis=0, keepdims=True)
    grads["X"] = d_z1 @ W1.T
    return grads
