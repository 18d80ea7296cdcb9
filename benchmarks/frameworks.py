"""The generated ``torch.autograd.Function`` (``--format torch``) against PyTorch's own autograd (issue 28).

For each network, in float32 on the CPU, in one interleaved run (``training._median_ms``: every repeat times each
variant once, the order rotating), the median time of a training step, forward + backward:
- derived: ``Network()(X, Y).backward()``, the generated Function whose backward is the derived formulas;
- autograd: ``Network().autograd_loss(X, Y).backward()``, the same module's parameters and the same forward code,
  differentiated by autograd (that forward, like the Function's, dels each temporary after its last use, as a
  forward written as nested expressions would let go of it).
The input needs no gradient (as in training), so neither computes dX. Gradients are reset to None between steps.

Memory, two measures, each for both variants:
- peak: the most bytes of tensor storage live at once during one step (forward, backward, and the gradients
  until they are reset), above what was live before it (the parameters and the batch). ``torch.profiler.profile``
  with ``profile_memory=True`` records every allocation and free of PyTorch's CPU allocator as a ``[memory]``
  event carrying its size (negative for a free; read from ``profiler.profiler.kineto_results.events()``); their
  running sum, in the order they happened, is the bytes of live tensors, and its highest value the step's peak
  (measured on the step after a warm-up step). It counts tensor storage exactly (not what the allocator
  or the C library keep around, not BLAS's own buffers), so it is the same from run to run;
- saved: the bytes of the tensors kept from forward for backward (``torch.autograd.graph.saved_tensors_hooks``
  sees both autograd's saved tensors and ``ctx.save_for_backward``), each storage counted once, leaving out the
  parameters and the batch (X, Y), which exist whatever the method.

Networks: the wide MLP of ``benchmarks.training`` (784-1024-1024-10, ReLU, half SSE, N = 512), a batch-norm MLP
of the same widths (dense without bias, batch norm, ReLU, twice; then the dense output; N = 512), and a transformer
block (causal four-head attention over d = 128, a residual add, layer norm, a ReLU dense layer, a residual add;
half SSE; a batch of 16 sequences of 64 positions). Goal (issue 28): derived / autograd <= 1.0 in time, and a
lower peak than autograd's. Run with ``python -m benchmarks.frameworks``; ``BENCH_REPEATS`` sets the number of
interleaved rounds.
"""

from __future__ import annotations

import importlib.util
import os
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


def peak_bytes(step) -> int:
    """The most bytes of tensor storage live at once during ``step()`` beyond those live before it: the running
    sum of the sizes of the profiler's allocation (+) and free (-) events, in the order they happened."""
    from torch.profiler import ProfilerActivity, profile

    step()  # warm-up: the same allocations as the step measured
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    events = sorted((event for event in profiler.profiler.kineto_results.events() if event.name() == "[memory]"),
                    key=lambda event: event.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


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
          f"rounds; a step is forward + backward (no dX); peak: the most bytes of tensors live at once during a step "
          f"(profiler allocation events), above the parameters and the batch")
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for index, (tag, spec_dict) in enumerate(NETWORKS.items()):
            module = torch_module(spec_dict, directory, f"network{index}")
            net, X, Y = _setup(module, torch, BATCH[tag])
            mismatch = _check_same_gradients(net, X, Y, torch)
            steps = _steps(net, X, Y)
            times = _median_ms(steps, repeats)
            peak = {variant: peak_bytes(step) for variant, step in steps.items()}
            exclude = [*net.parameters(), X, Y]
            saved = {"derived": saved_bytes(lambda net=net, X=X, Y=Y: net(X, Y), exclude),
                     "autograd": saved_bytes(lambda net=net, X=X, Y=Y: net.autograd_loss(X, Y), exclude)}
            ratio, peak_ratio = times["derived"] / times["autograd"], peak["derived"] / peak["autograd"]
            print(f"\n{tag} (gradients agree to {mismatch:.1e} in float32)")
            print(f"  {'':10} {'step ms':>9} {'peak MiB':>9} {'saved MiB':>10}")
            for variant in ("derived", "autograd"):
                print(f"  {variant:10} {times[variant]:9.2f} {peak[variant] / 2**20:9.2f} "
                      f"{saved[variant] / 2**20:10.2f}")
            print(f"  derived / autograd: time {ratio:.2f}x (target <= {TARGET:.1f}x: "
                  f"{'met' if ratio <= TARGET else 'missed'}), peak {peak_ratio:.2f}x (target < 1: "
                  f"{'met' if peak_ratio < 1 else 'missed'}), saved {saved['derived'] / saved['autograd']:.2f}x")
            results[tag] = {"ms": times, "peak": peak, "saved": saved, "ratio": ratio, "peak_ratio": peak_ratio}
    return results


if __name__ == "__main__":
    main()
