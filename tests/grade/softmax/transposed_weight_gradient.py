import numpy as np


def softmax(z):
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def backward(params, cache, Y_true):
    X, A1, logits = cache["X"], cache["a1"], cache["Y_pred"]
    m = X.shape[1]
    dZ2 = (softmax(logits) - Y_true) / m
    dW2 = A1 @ dZ2.T           # written as in the batch-first notes
    db2 = np.sum(dZ2, axis=1, keepdims=True)
    dZ1 = (params["W2"].T @ dZ2) * (1 - A1 ** 2)
    dW1 = dZ1 @ X.T
    db1 = np.sum(dZ1, axis=1, keepdims=True)
    dX = params["W1"].T @ dZ1
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "X": dX}
