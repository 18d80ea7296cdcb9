import numpy as np


def backward(params, cache, Y_true):
    d3 = cache["Y_pred"] - Y_true
    return cache["a2"].T @ d3, d3.sum(axis=0, keepdims=True)
