"""A correct backward pass of a makemore-style forward pass with integer ids: the embedding rows gathered by
C[Xb] and the picked log-probabilities logprobs[np.arange(n), Yb]; the cache holds Xb and Yb as integers and emb
as (n, 3, e), and the gathered rows' gradients are added back into dC with np.add.at (repeated ids add up)."""
import numpy as np

SHAPES = {"Xb": ("N", 3, "ids < V"), "Yb": ("N", "ids < V"), "C": ("V", "e"), "W1": ("3*e", "h"),
          "b1": (1, "h"), "bngain": (1, "h"), "bnbias": (1, "h"), "W2": ("h", "V"), "b2": (1, "V")}
SIZES = {"N": 32, "V": 27, "e": 10, "h": 64}


def forward(Xb, Yb, params):
    C, W1, b1, bngain, bnbias, W2, b2 = params
    n = len(Yb)
    emb = C[Xb]
    embcat = emb.reshape(n, -1)
    hprebn = embcat @ W1 + b1
    bnmeani = 1 / n * hprebn.sum(0, keepdims=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff ** 2
    bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdims=True)
    bnvar_inv = (bnvar + 1e-5) ** -0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = np.tanh(hpreact)
    logits = h @ W2 + b2
    logit_maxes = logits.max(1, keepdims=True)
    norm_logits = logits - logit_maxes
    counts = np.exp(norm_logits)
    counts_sum = counts.sum(1, keepdims=True)
    counts_sum_inv = counts_sum ** -1
    probs = counts * counts_sum_inv
    logprobs = np.log(probs)
    picked = logprobs[np.arange(n), Yb]
    loss = -picked.mean()
    return loss


def backward(cache):
    c = cache
    Xb, Yb, C, W1, W2, bngain = c["Xb"], c["Yb"], c["C"], c["W1"], c["W2"], c["bngain"]
    n = Yb.shape[0]
    dpicked = -np.ones(n) / n
    dlogprobs = np.zeros_like(c["logprobs"])
    dlogprobs[np.arange(n), Yb] = dpicked
    dprobs = dlogprobs / c["probs"]
    dcounts_sum_inv = (c["counts"] * dprobs).sum(1, keepdims=True)
    dcounts = c["counts_sum_inv"] * dprobs
    dcounts_sum = -c["counts_sum"] ** -2 * dcounts_sum_inv
    dcounts += np.ones_like(c["counts"]) * dcounts_sum
    dnorm_logits = c["counts"] * dcounts
    dlogit_maxes = -dnorm_logits.sum(1, keepdims=True)
    dlogits = dnorm_logits.copy()
    dlogits[np.arange(n), c["logits"].argmax(1)] += dlogit_maxes[:, 0]
    dh = dlogits @ W2.T
    dW2 = c["h"].T @ dlogits
    db2 = dlogits.sum(0, keepdims=True)
    dhpreact = (1 - c["h"] ** 2) * dh
    dbngain = (c["bnraw"] * dhpreact).sum(0, keepdims=True)
    dbnbias = dhpreact.sum(0, keepdims=True)
    dbnraw = bngain * dhpreact
    dbndiff = c["bnvar_inv"] * dbnraw
    dbnvar_inv = (c["bndiff"] * dbnraw).sum(0, keepdims=True)
    dbnvar = -0.5 * (c["bnvar"] + 1e-5) ** -1.5 * dbnvar_inv
    dbndiff2 = 1 / (n - 1) * np.ones_like(c["bndiff2"]) * dbnvar
    dbndiff += 2 * c["bndiff"] * dbndiff2
    dbnmeani = -dbndiff.sum(0, keepdims=True)
    dhprebn = dbndiff + 1 / n * np.ones_like(c["hprebn"]) * dbnmeani
    dembcat = dhprebn @ W1.T
    dW1 = c["embcat"].T @ dhprebn
    db1 = dhprebn.sum(0, keepdims=True)
    demb = dembcat.reshape(c["emb"].shape)
    dC = np.zeros_like(C)
    np.add.at(dC, Xb, demb)
    return {"dpicked": dpicked, "dlogprobs": dlogprobs, "dprobs": dprobs, "dcounts_sum_inv": dcounts_sum_inv,
            "dcounts_sum": dcounts_sum, "dcounts": dcounts, "dnorm_logits": dnorm_logits,
            "dlogit_maxes": dlogit_maxes, "dlogits": dlogits, "dh": dh, "dW2": dW2, "db2": db2,
            "dhpreact": dhpreact, "dbngain": dbngain, "dbnbias": dbnbias, "dbnraw": dbnraw, "dbndiff": dbndiff,
            "dbnvar_inv": dbnvar_inv, "dbnvar": dbnvar, "dbndiff2": dbndiff2, "dbnmeani": dbnmeani,
            "dhprebn": dhprebn, "dembcat": dembcat, "dW1": dW1, "db1": db1, "demb": demb, "dC": dC}
