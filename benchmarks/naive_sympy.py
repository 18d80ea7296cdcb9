"""Naive SymPy baseline for verifying a backprop formula.

This is the slow approach described in the issue, kept as the baseline that
``make bench`` compares our verifier against: build explicit matrices of scalar
symbols, differentiate the scalar loss with ``sympy.diff`` by every entry of
W1, build the chain-rule product dW1 = X^T delta1 entrywise, and check that
``sympy.expand`` of the difference (after ``sympy.together``, so that the
rational functions of exp(-z) can cancel) is zero.

Network (batch-first): Z_l = A_{l-1} W_l + 1_N b_l, A_0 = X,
A_l = sigmoid(Z_l) for hidden layers, identity output,
loss = 1/2 * sum((Y_pred - Y_true)**2).
"""

import multiprocessing
import time

import sympy


def _sigmoid(z):
    return 1 / (1 + sympy.exp(-z))


def _act(z, activation):
    if activation == "sigmoid":
        return _sigmoid(z)
    raise ValueError(f"unsupported activation: {activation!r}")


def _act_prime(z, activation):
    if activation == "sigmoid":
        s = _sigmoid(z)
        return s * (1 - s)
    raise ValueError(f"unsupported activation: {activation!r}")


def _sym_matrix(name, rows, cols):
    return sympy.Matrix(rows, cols, lambda i, j: sympy.Symbol(f"{name}_{i}_{j}"))


def _verify(N, sizes, activation):
    """Do the work; raises AssertionError if the formula disagrees."""
    t0 = time.perf_counter()
    L = len(sizes) - 1
    X = _sym_matrix("x", N, sizes[0])
    Ws = [_sym_matrix(f"w{l}", sizes[l - 1], sizes[l]) for l in range(1, L + 1)]
    bs = [_sym_matrix(f"b{l}", 1, sizes[l]) for l in range(1, L + 1)]
    Y = _sym_matrix("y", N, sizes[-1])
    ones = sympy.ones(N, 1)

    # Forward pass, keeping pre-activations Z_l.
    A, Zs = X, []
    for l in range(L):
        Z = A * Ws[l] + ones * bs[l]
        Zs.append(Z)
        A = Z if l == L - 1 else Z.applyfunc(lambda z: _act(z, activation))
    Y_pred = A
    loss = sympy.Rational(1, 2) * sum(e**2 for e in (Y_pred - Y))

    # Chain-rule formula: delta_L = Y_pred - Y,
    # delta_l = (delta_{l+1} W_{l+1}^T) ⊙ act'(Z_l), dW1 = X^T delta_1.
    delta = Y_pred - Y
    for l in range(L - 2, -1, -1):
        back = delta * Ws[l + 1].T
        delta = back.multiply_elementwise(
            Zs[l].applyfunc(lambda z: _act_prime(z, activation)))
    formula = X.T * delta

    # Direct differentiation by each entry of W1, compared entry by entry.
    W1 = Ws[0]
    for i in range(W1.rows):
        for j in range(W1.cols):
            direct = sympy.diff(loss, W1[i, j])
            # Plain expand() cannot cancel exp(-z)/(1+exp(-z))**2 against
            # s*(1-s), so first bring the difference over one denominator.
            diff = sympy.expand(sympy.together(direct - formula[i, j]))
            assert diff == 0, f"dW1[{i},{j}] mismatch: {diff}"
    return time.perf_counter() - t0


def _child(conn, N, sizes, activation):
    try:
        conn.send(("ok", _verify(N, sizes, activation)))
    except Exception as e:  # noqa: BLE001 - any failure in the child is re-raised by the parent
        conn.send(("err", e))
    finally:
        conn.close()


def naive_verify_w1(N, sizes, activation="sigmoid", time_limit=None) -> float:
    """Verify dW1 = X^T delta1 naively; return elapsed seconds.

    ``sizes`` = (d, h1, ..., o). With ``time_limit`` (seconds), the work runs
    in a forked child process that is terminated at the deadline, and
    ``float("inf")`` is returned if it did not finish in time.
    """
    sizes = tuple(sizes)
    if time_limit is None:
        return _verify(N, sizes, activation)

    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, N, sizes, activation), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(time_limit):
            return float("inf")
        status, value = recv.recv()
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join()
        recv.close()
    if status == "err":
        raise value
    return value


if __name__ == "__main__":
    N, sizes = 2, (3, 4, 3, 1)
    t = naive_verify_w1(N, sizes, time_limit=300)
    print(f"naive sympy, N={N}, sizes={sizes}: {t:.2f} s")
