import numpy as np


def backward(params, cache, Y_true):
    print("shapes:", {k: v.shape for k, v in cache.items()})
    d3 = cache["Y_pred"] - Y_true
    d2 = (d3 * params["W3"].reshape(1, 2)) * cache["da2_dZ2"]   # one output: the product is an outer product
    d1 = (d2 @ params["W2"].T) * cache["da1_dZ1"]
    return {"W3": cache["a2"].T @ d3, "b3": d3.sum(axis=0).reshape(1, 1),
            "W2": cache["a1"].T @ d2, "b2": d2.sum(axis=0).reshape(1, 2),
            "W1": cache["X"].T @ d1, "b1": d1.sum(axis=0).reshape(1, 3), "X": d1 @ params["W1"].T}
