import numpy as np


def backward(params, cache, Y_true):
    # columns are samples
    m = Y_true.shape[1]
    dZ2 = (cache["Y_pred"] - Y_true) / m
    dW2 = dZ2 @ cache["a1"].T
    db2 = dZ2.sum(axis=1, keepdims=True)
    dA1 = params["W2"].T @ dZ2
    dZ1 = dA1 * (1 - cache["a1"] ** 2)
    dW1 = dZ1 @ cache["X"].T
    db1 = dZ1.sum(axis=1, keepdims=True)
    dX = params["W1"].T @ dZ1
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "X": dX}
