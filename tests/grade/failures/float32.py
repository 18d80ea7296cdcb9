import numpy as np


def backward(params, cache, Y_true):
    p = {k: v.astype(np.float32) for k, v in params.items()}
    c = {k: v.astype(np.float32) for k, v in cache.items()}
    d3 = c["Y_pred"] - Y_true.astype(np.float32)
    d2 = (d3 @ p["W3"].T) * c["da2_dZ2"]
    d1 = (d2 @ p["W2"].T) * c["da1_dZ1"]
    return {"W3": c["a2"].T @ d3, "b3": d3.sum(axis=0, keepdims=True),
            "W2": c["a1"].T @ d2, "b2": d2.sum(axis=0, keepdims=True),
            "W1": c["X"].T @ d1, "b1": d1.sum(axis=0, keepdims=True), "X": d1 @ p["W1"].T}
