def back_prop(params, cache, Y_true):
    return {}


def helper(x):
    return x
