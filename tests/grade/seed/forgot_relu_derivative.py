import numpy as np


def backward(params, cache, Y_true):
    X, a1, a2 = cache["X"], cache["a1"], cache["a2"]
    W1, W2, W3 = params["W1"], params["W2"], params["W3"]
    dZ3 = cache["Y_pred"] - Y_true
    dW3 = np.dot(a2.T, dZ3)
    db3 = np.sum(dZ3, axis=0, keepdims=True)
    dZ2 = np.dot(dZ3, W3.T)
    dW2 = np.dot(a1.T, dZ2)
    db2 = np.sum(dZ2, axis=0, keepdims=True)
    dA1 = np.dot(dZ2, W2.T)
    dZ1 = dA1 * cache["da1_dZ1"]
    dW1 = np.dot(X.T, dZ1)
    db1 = np.sum(dZ1, axis=0, keepdims=True)
    dX = np.dot(dZ1, W1.T)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3, "X": dX}
