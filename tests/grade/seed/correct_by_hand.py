import numpy as np

def backward(params, cache, Y_true):
    W1, W2, W3 = params["W1"], params["W2"], params["W3"]
    X, a1, a2, Y = cache["X"], cache["a1"], cache["a2"], cache["Y_pred"]
    d3 = Y - Y_true
    grads = {"W3": a2.T @ d3, "b3": d3.sum(axis=0, keepdims=True)}
    d2 = (d3 @ W3.T) * cache["da2_dZ2"]
    grads["W2"] = a1.T @ d2
    grads["b2"] = d2.sum(axis=0, keepdims=True)
    d1 = (d2 @ W2.T) * cache["da1_dZ1"]
    grads["W1"] = X.T @ d1
    grads["b1"] = d1.sum(axis=0, keepdims=True)
    grads["X"] = d1 @ W1.T
    return grads
