import numpy as np


def relu_prime(a):
    return (a > 0).astype(float)


def backward(params, cache, Y_true):
    X, h1, h2 = cache["X"], cache["a1"], cache["a2"]
    d_out = cache["Y_pred"] - Y_true
    d_h2 = d_out @ params["W3"].T
    d_z2 = d_h2 * relu_prime(h2)
    d_h1 = d_z2 @ params["W2"].T
    d_z1 = d_h1 * relu_prime(h1)
    return {
        "W3": h2.T @ d_out, "b3": d_out.sum(axis=0, keepdims=True),
        "W2": h1.T @ d_z2, "b2": d_z2.sum(axis=0, keepdims=True),
        "W1": X.T @ d_z1, "b1": d_z1.sum(axis=0, keepdims=True),
        "X": d_z1 @ params["W1"].T,
    }
