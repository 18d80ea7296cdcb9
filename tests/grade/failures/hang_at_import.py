import time

time.sleep(60)


def backward(params, cache, Y_true):
    return {}
