import numpy as np


def backward(params, cache, Y_true):
    grads = {}
    dz = cache["Y_pred"] - Y_true
    grads["W3"] = cache["a2"].T.dot(dz)
    grads["b3"] = dz.sum(axis=0, keepdims=True)
    dz = dz.dot(params["W3"].T) * cache["da2_dZ2"]
    grads["W2"] = cache["a1"].T.dot(dz)
    grads["b2"] = dz.sum(axis=1, keepdims=True)
    dz = dz.dot(params["W2"].T) * cache["da1_dZ1"]
    grads["W1"] = cache["X"].T.dot(dz)
    grads["b1"] = dz.sum(axis=0, keepdims=True)
    grads["X"] = dz.dot(params["W1"].T)
    return grads
