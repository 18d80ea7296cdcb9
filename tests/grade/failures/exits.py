import os


def backward(params, cache, Y_true):
    os._exit(3)
