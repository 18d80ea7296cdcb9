def backward(params, cache, Y_true):
    total = 0
    while True:
        total += 1
