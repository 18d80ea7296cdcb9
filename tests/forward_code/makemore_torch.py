"""The makemore-style MLP of makemore_numpy.py in PyTorch's spelling: the embedding rows flattened with .view,
methods for exp, log and the sums, .max(1, keepdim=True).values for the stabilizing maximum, and the picked
log-probabilities indexed with range(n) inside the mean."""
import torch

SHAPES = {"Xb": ("N", 3, "ids < V"), "Yb": ("N", "ids < V"), "C": ("V", "e"), "W1": ("3*e", "h"),
          "b1": (1, "h"), "bngain": (1, "h"), "bnbias": (1, "h"), "W2": ("h", "V"), "b2": (1, "V")}
SIZES = {"N": 32, "V": 27, "e": 10, "h": 64}


def forward(Xb, Yb, params):
    C, W1, b1, bngain, bnbias, W2, b2 = params
    n = Xb.shape[0]
    emb = C[Xb]
    embcat = emb.view(emb.shape[0], -1)
    hprebn = embcat @ W1 + b1
    bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff ** 2
    bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdim=True)
    bnvar_inv = (bnvar + 1e-5) ** -0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = torch.tanh(hpreact)
    logits = h @ W2 + b2
    logit_maxes = logits.max(1, keepdim=True).values
    norm_logits = logits - logit_maxes
    counts = norm_logits.exp()
    counts_sum = counts.sum(1, keepdim=True)
    counts_sum_inv = counts_sum ** -1
    probs = counts * counts_sum_inv
    logprobs = probs.log()
    loss = -logprobs[range(n), Yb].mean()
    return loss
