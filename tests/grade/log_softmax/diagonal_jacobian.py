import numpy as np


def backward(params, cache, Y_true):
    W1, W2 = params["W1"], params["W2"]
    X, h, scores = cache["X"], cache["a1"], cache["a2"]
    N = X.shape[0]
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    dlogp = -Y_true / N
    dscores = dlogp * (1 - p)  # log(softmax)' taken entry by entry
    grads = {"W2": h.T @ dscores, "b2": dscores.sum(axis=0, keepdims=True)}
    dz = (dscores @ W2.T) * cache["da1_dZ1"]
    grads["W1"] = X.T @ dz
    grads["b1"] = dz.sum(axis=0, keepdims=True)
    grads["X"] = dz @ W1.T
    return grads
