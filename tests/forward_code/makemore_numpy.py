"""A character-level MLP in the style of makemore, written in NumPy with one operation per line so that every
intermediate has a name: three context characters looked up in an embedding table and laid side by side, a
hidden layer with batch normalization spelled out (the variance with Bessel's 1/(n-1)), tanh, an output layer,
a softmax computed from a row-max-shifted exponential, and the mean negative log-probability of the next
character."""
import numpy as np

SHAPES = {"Xb": ("N", 3, "ids < V"), "Yb": ("N", "ids < V"), "C": ("V", "e"), "W1": ("3*e", "h"),
          "b1": (1, "h"), "bngain": (1, "h"), "bnbias": (1, "h"), "W2": ("h", "V"), "b2": (1, "V")}
SIZES = {"N": 32, "V": 27, "e": 10, "h": 64}


def forward(Xb, Yb, params):
    C, W1, b1, bngain, bnbias, W2, b2 = params
    n = len(Yb)
    emb = C[Xb]
    embcat = np.reshape(emb, (n, -1))
    hprebn = embcat @ W1 + b1
    bnmeani = hprebn.sum(axis=0, keepdims=True) / n
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff ** 2
    bnvar = bndiff2.sum(axis=0, keepdims=True) / (n - 1)
    bnvar_inv = (bnvar + 1e-5) ** -0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = np.tanh(hpreact)
    logits = h @ W2 + b2
    logit_maxes = np.max(logits, axis=1, keepdims=True)
    norm_logits = logits - logit_maxes
    counts = np.exp(norm_logits)
    counts_sum = counts.sum(axis=1, keepdims=True)
    counts_sum_inv = counts_sum ** -1
    probs = counts * counts_sum_inv
    logprobs = np.log(probs)
    picked = logprobs[np.arange(n), Yb]
    loss = -np.mean(picked)
    return loss
