import numpy as np


def backward(params, cache, Y_true):
    W1, W2 = params["W1"], params["W2"]
    X, h, probs = cache["X"], cache["a1"], cache["Y_pred"]
    N = X.shape[0]
    dprobs = -Y_true / probs / N
    dscores = dprobs * probs * (1 - probs)  # the softmax's derivative, entry by entry
    grads = {"W2": h.T @ dscores, "b2": dscores.sum(axis=0, keepdims=True)}
    dh = dscores @ W2.T
    dz = dh * (1 - h**2)
    grads["W1"] = X.T @ dz
    grads["b1"] = dz.sum(axis=0, keepdims=True)
    grads["X"] = dz @ W1.T
    return grads
