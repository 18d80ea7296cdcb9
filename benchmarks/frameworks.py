"""The generated ``torch.autograd.Function`` (``--format torch``) against PyTorch's own autograd (issue 28).

For each network, in float32 on the CPU, in one interleaved run (``training._median_ms``: every repeat times each
variant once, the order rotating), the median time of a training step, forward + backward:
- derived: ``Network()(X, Y).backward()``, the generated Function whose backward is the derived formulas;
- autograd: ``Network().autograd_loss(X, Y).backward()``, the same module's parameters and the same forward code,
  differentiated by autograd.
The input needs no gradient (as in training), so neither computes dX. Gradients are reset to None between steps.

Memory, two measures, each for both variants:
- saved: the bytes of the tensors kept from forward for backward (``torch.autograd.graph.saved_tensors_hooks``
  sees both autograd's saved tensors and ``ctx.save_for_backward``), each storage counted once, leaving out the
  parameters and the batch (X, Y), which exist whatever the method;
- peak RSS rise: how far the process's resident memory rises above where it was before a step, at its highest
  during three steps (after a warm-up step), sampled every 0.2 ms by a thread, in a fresh process per variant
  that imports only PyTorch and the generated module; coarse (pages, what the allocator keeps), and what a
  CPU run actually costs. (tracemalloc does not see PyTorch's allocator, and PyTorch keeps no allocator
  statistics on the CPU.)

Networks: the wide MLP of ``benchmarks.training`` (784-1024-1024-10, ReLU, half SSE, N = 512), a batch-norm MLP
of the same widths (dense without bias, batch norm, ReLU, twice; then the dense output; N = 512), and a transformer
block (causal four-head attention over d = 128, a residual add, layer norm, a ReLU dense layer, a residual add;
half SSE; a batch of 16 sequences of 64 positions). Goal (issue 28): derived / autograd <= 1.0 in time, and below autograd's memory. Run with ``python -m benchmarks.frameworks``;
``BENCH_REPEATS`` sets the number of interleaved rounds.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.training import _median_ms
from benchmarks.training import spec as mlp_spec
from symbackprop import derive

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")

N = 512
REPEATS = 30
TARGET = 1.0


def batchnorm_mlp_spec() -> dict:
    """784-1024-1024-10: each hidden dense layer (no bias: batch norm's shift replaces it) followed by batch norm
    and ReLU; identity output, half the sum of squared errors, batch-first."""
    hidden = []
    for width in (1024, 1024):
        hidden += [{"size": width, "activation": "identity", "bias": False}, {"kind": "batchnorm"},
                   {"kind": "activation", "activation": "relu"}]
    return {"input": {"size": 784}, "layers": [*hidden, {"size": 10, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


def transformer_spec(width: int = 128, heads: int = 4) -> dict:
    """tests/specs_sequence/transformer_block.toml at a training width: causal multi-head attention, a residual
    add, layer norm, a ReLU dense layer of the same width, a residual add; half SSE."""
    return {"input": {"size": width},
            "layers": [{"kind": "attention", "heads": heads, "causal": True}, {"kind": "add", "from": "X"},
                       {"kind": "layernorm"}, {"size": width, "activation": "relu"}, {"kind": "add", "from": "a3"}],
            "loss": {"kind": "half_sse"}}


NETWORKS = {
    "784-1024-1024-10 ReLU, half_sse": mlp_spec(784, [1024, 1024, 10]),
    "784-1024-1024-10 batch norm + ReLU, half_sse": batchnorm_mlp_spec(),
    "transformer block d=128, 4 causal heads, B=16 x T=64, half_sse": transformer_spec(),
}
# The batch's leading dimensions: N samples, or B sequences of T positions (an attention network's input).
BATCH = {tag: (16, 64) if tag.startswith("transformer") else (N,) for tag in NETWORKS}


def torch_module(spec_dict: dict, directory: str, tag: str):
    path = Path(directory) / f"backprop_torch_{tag}.py"
    if not path.exists():
        path.write_text(derive(spec_dict).render("torch"), encoding="utf-8")
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _setup(module, torch, batch=(N,)):
    torch.manual_seed(0)
    net = module.Network(0, dtype=torch.float32)
    X = torch.randn(*batch, module.SIZES[0])
    Y = torch.randn(*batch, module.SIZES[-1])
    return net, X, Y


def _steps(net, X, Y):
    def derived():
        net(X, Y).backward()
        for p in net.parameters():
            p.grad = None

    def autograd():
        net.autograd_loss(X, Y).backward()
        for p in net.parameters():
            p.grad = None

    return {"derived": derived, "autograd": autograd}


def saved_bytes(loss_fn, exclude) -> int:
    """Bytes of the distinct storages saved for backward by ``loss_fn()``, leaving out those of ``exclude``."""
    import torch

    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_fn()
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    del loss
    return sum(size for ptr, size in storages.items() if ptr not in skip)


# Run in a fresh process that imports only PyTorch and the generated module: the rise of the resident memory
# over a step (after a warm-up step), sampled every 0.2 ms by a thread while the step runs.
_RSS_CHILD = """
import importlib.util, os, sys, threading, time
import torch
torch.set_num_threads(int(sys.argv[3]))
spec = importlib.util.spec_from_file_location("generated", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
torch.manual_seed(0)
net = module.Network(0, dtype=torch.float32)
batch = [int(n) for n in sys.argv[4].split(",")]
X, Y = torch.randn(*batch, module.SIZES[0]), torch.randn(*batch, module.SIZES[-1])
loss = net if sys.argv[2] == "derived" else net.autograd_loss
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
def step():
    loss(X, Y).backward()
    for p in net.parameters():
        p.grad = None
step()
base, peak, running = rss(), [0], [True]
def sample():
    while running[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.0002)
thread = threading.Thread(target=sample); thread.start()
for _ in range(3):
    step()
running[0] = False; thread.join()
print(max(peak[0] - base, 0))
"""


def _slug(tag: str) -> str:
    return "bn" if "batch norm" in tag else "transformer" if tag.startswith("transformer") else "mlp"


def peak_rss(path: Path, variant: str, threads: int, batch=(N,)) -> int:
    result = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), variant, str(threads),
                             ",".join(map(str, batch))],
                            capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def _check_same_gradients(net, X, Y, torch) -> float:
    """The two variants' gradients agree (float32): the largest relative difference, in norm."""
    derived = torch.autograd.grad(net(X, Y), list(net.parameters()))
    reference = torch.autograd.grad(net.autograd_loss(X, Y), list(net.parameters()))
    return max(float(torch.linalg.norm(d - r) / torch.linalg.norm(r)) for d, r in zip(derived, reference))


def main(repeats: int | None = None) -> dict:
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: skipped (pip install 'symbackprop[torch]')")
        return {}
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", REPEATS))
    threads = int(os.environ.get("BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    print(f"PyTorch {torch.__version__}, CPU, float32, {threads} threads, N = {N} (the transformer: 16 x 64); median of {repeats} interleaved "
          f"rounds; a step is forward + backward (no dX)")
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for tag, spec_dict in NETWORKS.items():
            module = torch_module(spec_dict, directory, _slug(tag))
            net, X, Y = _setup(module, torch, BATCH[tag])
            mismatch = _check_same_gradients(net, X, Y, torch)
            times = _median_ms(_steps(net, X, Y), repeats)
            exclude = [*net.parameters(), X, Y]
            saved = {"derived": saved_bytes(lambda net=net, X=X, Y=Y: net(X, Y), exclude),
                     "autograd": saved_bytes(lambda net=net, X=X, Y=Y: net.autograd_loss(X, Y), exclude)}
            path = Path(directory) / f"backprop_torch_{_slug(tag)}.py"
            rss = {variant: peak_rss(path, variant, threads, BATCH[tag]) for variant in ("derived", "autograd")}
            ratio = times["derived"] / times["autograd"]
            print(f"\n{tag} (gradients agree to {mismatch:.1e} in float32)")
            print(f"  {'':10} {'step ms':>9} {'saved MiB':>10} {'peak RSS rise MiB':>18}")
            for variant in ("derived", "autograd"):
                print(f"  {variant:10} {times[variant]:9.2f} {saved[variant] / 2**20:10.2f} "
                      f"{rss[variant] / 2**20:18.1f}")
            print(f"  derived / autograd: time {ratio:.2f}x (target <= {TARGET:.1f}x: "
                  f"{'met' if ratio <= TARGET else 'missed'}), saved {saved['derived'] / saved['autograd']:.2f}x, "
                  f"peak RSS rise {rss['derived'] / max(rss['autograd'], 1):.2f}x")
            results[tag] = {"ms": times, "saved": saved, "rss": rss, "ratio": ratio}
    return results


if __name__ == "__main__":
    main()
