import numpy as np


def backward(params, cache, Y_true):
    W1, b1, W2, W3 = params["W1"], params["b1"], params["W2"], params["W3"]
    X = cache["X"]
    delta = cache["Y_pred"] - Y_true
    grads = {"W3": cache["a2"].T @ delta, "b3": delta}
    delta = delta @ W3.T * cache["da2_dZ2"]
    pre1 = X @ W1 + b1
    grads["W2"] = pre1.T @ delta
    grads["b2"] = delta.sum(axis=0, keepdims=True)
    delta = delta @ W2.T * cache["da1_dZ1"]
    grads["W1"] = X.T @ delta
    grads["b1"] = delta.sum(axis=0, keepdims=True)
    grads["X"] = delta @ W1.T
    return grads
