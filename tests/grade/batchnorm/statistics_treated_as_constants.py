import numpy as np


def backward(params, cache, Y_true):
    W1, gamma, W3 = params["W1"], params["gamma2"], params["W3"]
    X, xhat, rstd, a2 = cache["X"], cache["xhat2"], cache["rstd2"], cache["a2"]
    dout = cache["Y_pred"] - Y_true
    grads = {"W3": a2.T @ dout, "b3": dout.sum(axis=0, keepdims=True)}
    dy = dout @ W3.T
    grads["gamma2"] = np.sum(dy * xhat, axis=0, keepdims=True)
    grads["beta2"] = np.sum(dy, axis=0, keepdims=True)
    dxhat = dy * gamma
    dx = dxhat * rstd  # as if the batch statistics were fixed numbers
    dz = dx * cache["da1_dZ1"]
    grads["W1"] = X.T @ dz
    grads["b1"] = np.sum(dz, axis=0, keepdims=True)
    grads["X"] = dz @ W1.T
    return grads
