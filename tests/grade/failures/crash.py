import numpy as np


def backward(params, cache, Y_true):
    d3 = cache["Y_pred"] - Y_true
    d2 = (d3 @ params["W3"].T) * cache["da2_dZ2"]
    dW2 = d2 @ cache["a1"].T        # column-layout habit: the shapes do not fit
    return {"W2": dW2}
