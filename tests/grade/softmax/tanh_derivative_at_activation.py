import numpy as np


def softmax(z):
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def backward(params, cache, Y_true):
    X, A1 = cache["X"], cache["a1"]
    m = X.shape[1]
    dZ2 = (softmax(cache["Y_pred"]) - Y_true) / m
    dA1 = params["W2"].T @ dZ2
    dZ1 = dA1 * (1 - np.tanh(A1) ** 2)
    return {"W1": dZ1 @ X.T, "b1": dZ1.sum(axis=1, keepdims=True),
            "W2": dZ2 @ A1.T, "b2": dZ2.sum(axis=1, keepdims=True), "X": params["W1"].T @ dZ1}
