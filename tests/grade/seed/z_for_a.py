import numpy as np


def backward(params, cache, Y_true):
    W1, b1, W2, W3 = params["W1"], params["b1"], params["W2"], params["W3"]
    X, a1, a2, out = cache["X"], cache["a1"], cache["a2"], cache["Y_pred"]
    delta3 = out - Y_true
    dW3 = a2.T @ delta3
    db3 = np.sum(delta3, axis=0, keepdims=True)
    delta2 = (delta3 @ W3.T) * cache["da2_dZ2"]
    Z1 = X @ W1 + b1
    dW2 = Z1.T @ delta2
    db2 = np.sum(delta2, axis=0, keepdims=True)
    delta1 = (delta2 @ W2.T) * cache["da1_dZ1"]
    dW1 = X.T @ delta1
    db1 = np.sum(delta1, axis=0, keepdims=True)
    dX = delta1 @ W1.T
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3, "X": dX}
