import numpy as np


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def backward(params, cache, Y_true):
    dlogits = sigmoid(cache["Y_pred"]) - Y_true
    dW2 = cache["a1"].T @ dlogits
    db2 = dlogits.sum(axis=0, keepdims=True)
    dz = (dlogits @ params["W2"].T) * cache["da1_dZ1"]
    return {"W1": cache["X"].T @ dz, "b1": dz.sum(axis=0, keepdims=True),
            "W2": dW2, "b2": db2, "X": dz @ params["W1"].T}
