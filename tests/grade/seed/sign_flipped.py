import numpy as np


def backward(params, cache, Y_true):
    e = Y_true - cache["Y_pred"]
    res = {"W3": cache["a2"].T @ e, "b3": e.sum(axis=0, keepdims=True)}
    e = (e @ params["W3"].T) * cache["da2_dZ2"]
    res["W2"], res["b2"] = cache["a1"].T @ e, e.sum(axis=0, keepdims=True)
    e = (e @ params["W2"].T) * cache["da1_dZ1"]
    res["W1"], res["b1"] = cache["X"].T @ e, e.sum(axis=0, keepdims=True)
    res["X"] = e @ params["W1"].T
    return res
