"""Two context characters looked up in an embedding table, a tanh layer and a softmax over the next character;
the backward pass assigns the gathered rows' gradients into dC (dC[Xb] = demb) where they must be added up
(np.add.at(dC, Xb, demb)): an id that occurs several times in the batch keeps only its last row's gradient."""
import numpy as np

SHAPES = {"Xb": ("N", 2, "ids < V"), "Yb": ("N", "ids < V"), "C": ("V", "e"), "W": ("2*e", "V")}
SIZES = {"N": 24, "V": 11, "e": 6}


def forward(Xb, Yb, params):
    C, W = params
    n = len(Yb)
    emb = C[Xb]
    embcat = emb.reshape(n, -1)
    h = np.tanh(embcat)
    logits = h @ W
    counts = np.exp(logits)
    probs = counts / counts.sum(1, keepdims=True)
    logprobs = np.log(probs)
    loss = -logprobs[np.arange(n), Yb].mean()
    return loss


def backward(cache):
    Xb, Yb, C, W, h, probs = (cache[k] for k in ("Xb", "Yb", "C", "W", "h", "probs"))
    n = len(Yb)
    dlogits = probs.copy()
    dlogits[np.arange(n), Yb] -= 1
    dlogits /= n
    dW = h.T @ dlogits
    dh = dlogits @ W.T
    dembcat = (1 - h ** 2) * dh
    demb = dembcat.reshape(n, 2, -1)
    dC = np.zeros_like(C)
    dC[Xb] = demb
    return {"dlogits": dlogits, "dW": dW, "dh": dh, "dembcat": dembcat, "demb": demb, "dC": dC}
