"""The generated NumPy step against its own matrix products (the BLAS floor) and PyTorch eager, per layer kind
(issue 30), one thread each, in one interleaved run.

Nets: 784 -> [dense 1024 without bias -> LAYER -> ReLU] x 2 -> dense 10, softmax cross-entropy, N = 512, LAYER
one of batch norm, layer norm, dropout (p = 0.1, the same fixed masks on both sides) or nothing (``plain``). For
each kind and dtype, the median of:
- generated: ``forward`` + ``backward`` of the module ``symbackprop derive`` writes (gradients of every
  parameter and the input, as the peers harness times it);
- BLAS floor: the same step's matrix products alone, on operands of its shapes, into preallocated arrays;
- PyTorch eager: the same net (``F.batch_norm(training=True)`` / ``F.layer_norm``), same gradients.
What a layer adds to a step is the median over repeats of that step's time minus the plain net's in the same
repeat, for ours and for PyTorch. The page
faults of one generated step (fresh memory the allocator maps and the kernel fills page by page) are counted in
a process that runs the module alone, as a training script would: 0 once the module reuses its products'
arrays (4,000 to 6,000 before, 10-20 % of the step; in this process, between the other variants' allocations,
the allocator happened to keep its memory). Gradients
are compared with PyTorch's before anything is timed. Goals (issue 30): batch norm adds at most 1.5x what it
adds to PyTorch's step; the batch-norm step within 1.10x of its BLAS floor, every net of width >= 256 within
1.05x. Last, the plain net's products alone under each of OpenBLAS's kernel sets (``OPENBLAS_CORETYPE``), a process
per set: the BLAS library's own share of the comparison with the peers. ``BENCH_REPEATS`` sets the number of
interleaved repeats (default 10).
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks.batchnorm import one_blas_thread
from benchmarks.training import (
    blas_description,
    generated_module,
    interleaved_ms,
    matmul_bound,
    torch_on_one_thread,
)

N, INPUT, HIDDEN, CLASSES, EPS = 512, 784, 1024, 10, 1e-5
KINDS = ("plain", "batchnorm", "layernorm", "dropout")
DROPOUT = 0.1
GOALS = {"adds": 1.5, "floor": {"batchnorm": 1.10, "plain": 1.05, "layernorm": 1.05, "dropout": 1.05}}


def spec(kind: str) -> dict:
    layers = []
    for _ in range(2):
        layers.append({"size": HIDDEN, "activation": "identity", "bias": False})
        if kind == "dropout":
            layers.append({"kind": kind, "p": DROPOUT})
        elif kind != "plain":
            layers.append({"kind": kind, "eps": EPS})
        layers.append({"kind": "activation", "activation": "relu", "relu_grad_at_zero": 0})
    layers.append({"size": CLASSES, "activation": "identity"})
    return {"input": {"size": INPUT}, "layers": layers, "loss": {"kind": "softmax_cross_entropy"}}


def weight_names(params) -> list[str]:
    return [name for name in params if name.startswith("W")]


def torch_step(kind, params, X, Y, masks):
    """PyTorch eager on one thread: the same net, loss and gradients; None without PyTorch."""
    torch = torch_on_one_thread()
    if torch is None:
        return None, None
    F = torch.nn.functional
    tp = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    tX, tY = torch.tensor(X, requires_grad=True), torch.tensor(Y)
    tM = {name: torch.tensor(mask) for name, mask in masks.items()}
    Ws = weight_names(params)

    def gradients():
        A = tX
        for W in Ws[:-1]:
            A = A @ tp[W]
            l = int(W[1:]) + 1  # the layer's number follows its dense layer's
            if kind == "batchnorm":
                A = F.batch_norm(A, None, None, tp[f"gamma{l}"][0], tp[f"beta{l}"][0], training=True, eps=EPS)
            elif kind == "layernorm":
                A = F.layer_norm(A, (A.shape[1],), tp[f"gamma{l}"][0], tp[f"beta{l}"][0], eps=EPS)
            elif kind == "dropout":
                A = A * tM[f"M{l}"] * (1 / (1 - DROPOUT))
            A = torch.relu(A)
        A = torch.addmm(tp[f"b{Ws[-1][1:]}"], A, tp[Ws[-1]])
        loss = -(tY * torch.log_softmax(A, dim=1)).sum() / N
        loss.backward()
        grads = {name: t.grad for name, t in tp.items()} | {"X": tX.grad}
        for t in (*tp.values(), tX):
            t.grad = None
        return grads

    return gradients, lambda: {name: g.numpy() for name, g in gradients().items()}


def training_step(module, params, X, Y, masks):
    """The generated module's forward + backward, as the peers harness times it (``masks``: dropout's, or none)."""
    cache = module.forward(params, X, masks)[1] if masks else module.forward(params, X)[1]
    return module.backward(params, cache, Y)


FAULTS = """
import importlib.util, resource, sys
import numpy as np
spec = importlib.util.spec_from_file_location("generated", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
dtype, n, width, classes = np.dtype(sys.argv[2]), *map(int, sys.argv[3:6])
rng = np.random.default_rng(0)
X, Y = rng.standard_normal((n, width)).astype(dtype), np.eye(classes, dtype=dtype)[rng.integers(0, classes, n)]
params = module.init_params(0, dtype=dtype)
masks = [module.draw_masks(n, dtype=dtype)] if hasattr(module, "draw_masks") else []
for _ in range(3):
    module.backward(params, module.forward(params, X, *masks)[1], Y)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    module.backward(params, module.forward(params, X, *masks)[1], Y)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


KERNELS = """
import sys
import numpy as np
from threadpoolctl import threadpool_info
from benchmarks.training import _median_ms, matmul_bound
n, width, hidden, classes, repeats = map(int, sys.argv[1:6])
rng = np.random.default_rng(0)
print(",".join(p.get("architecture") or "?" for p in threadpool_info() if p["internal_api"] == "openblas"))
for dtype in (np.float32, np.float64):
    sizes = [width, hidden, hidden, classes]
    weights = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes, sizes[1:])]
    floor = matmul_bound(weights, [0] * len(weights), rng.standard_normal((n, width)).astype(dtype))
    print(_median_ms({"floor": floor}, repeats)["floor"])
"""
# OpenBLAS kernel sets to try on x86-64 (OPENBLAS_CORETYPE): its default picks by CPU model. On an AMD EPYC (Zen 4)
# it picks SkylakeX's AVX-512 kernels; Haswell's AVX2 ones took 0.92x their time in float32 there, 1.03x in
# float64 ("Zen" names the same kernels).
CORETYPES = ("Haswell", "Zen", "SkylakeX")


def kernel_floors(rounds: int = 3, repeats: int = 5) -> None:
    """The plain net's BLAS floor under each of OpenBLAS's kernel sets (``OPENBLAS_CORETYPE``, which OpenBLAS
    reads once, when it loads), a process per set and round, the sets in turn each round: what a user gains
    by naming another set before NumPy loads. Prints nothing where NumPy's BLAS is not OpenBLAS on x86-64 (or
    threadpoolctl, which tells, is missing)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return
    if platform.machine() not in ("x86_64", "AMD64") or \
            not any(p["internal_api"] == "openblas" for p in threadpool_info()):
        return
    names, times, failed = {}, {}, {}
    for _ in range(rounds):
        for coretype in ("", *CORETYPES):
            if coretype in failed:
                continue
            env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_CORETYPE": coretype}
            if not coretype:
                del env["OPENBLAS_CORETYPE"]  # OpenBLAS's own choice
            run = subprocess.run([sys.executable, "-c", KERNELS, *map(str, (N, INPUT, HIDDEN, CLASSES, repeats))],
                                 check=False, capture_output=True, text=True, env=env)
            if run.returncode != 0:  # OpenBLAS runs a named set's kernels unchecked: a CPU without their
                failed[coretype] = run.returncode  # instructions stops the process (SIGILL)
                continue
            lines = run.stdout.split()
            names[coretype] = lines[0]
            times.setdefault(coretype, []).append([float(t) for t in lines[1:]])
    print(f"\nOpenBLAS kernel sets: the plain net's BLAS floor, one thread, a process per set (median of {rounds} "
          f"rounds of {repeats}; {load_note()})")
    if "" in failed:
        print(f"  the default kernels' process failed (exit status {failed['']})")
        return
    default = [statistics.median(run[i] for run in times[""]) for i in range(2)]
    for coretype in ("", *CORETYPES):
        label = f"OPENBLAS_CORETYPE={coretype}" if coretype else "default"
        if coretype in failed:
            print(f"  {label:<28} not run here: its process failed (exit status {failed[coretype]}; a CPU without "
                  "the set's instructions)")
            continue
        ms = [statistics.median(run[i] for run in times[coretype]) for i in range(2)]
        print(f"  {label:<28} kernels {names[coretype]:<9} float32 {ms[0]:7.2f}ms ({ms[0] / default[0]:.3f}x)"
              f"  float64 {ms[1]:7.2f}ms ({ms[1] / default[1]:.3f}x)")


def paired_difference(times: dict, name: str, base: str) -> float:
    """The median over repeats of ``name``'s time minus ``base``'s in the same repeat (both ran within one
    interleaved round, so a slow spell of the machine slows both)."""
    return statistics.median(a - b for a, b in zip(times[name], times[base]))


def faults_per_step(module, dtype) -> float:
    """Minor page faults per step of the generated module in a process of its own (a training script's: no other
    library's allocations in between), after three warm-up steps; nan where the system does not count them.

    The script stands alone, its loop at the top level, because the count before products reused their arrays
    depended on the order arrays were freed in: the same loop inside a function (a ``functools.partial`` of
    ``training_step``) showed 0 faults for the plain net's old module and 4,749 for the batch-norm net's, where
    this script shows 4,492 and 5,524. With reused products it shows 0 either way."""
    try:
        import resource  # noqa: F401 (POSIX only)
    except ImportError:
        return float("nan")
    run = subprocess.run([sys.executable, "-c", FAULTS, module.__file__, np.dtype(dtype).name, str(N), str(INPUT),
                          str(CLASSES)], capture_output=True, text=True, check=True,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    return float(run.stdout)


def load_note() -> str:
    """The 1-minute load against the cores: timings from a loaded machine are noisy and run slow."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    busy = " - the machine is loaded: expect noise" if load > cores - 1 else ""
    return f"load {load:.1f} on {cores} cores{busy}"


def bench(dtype, directory, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, INPUT)).astype(dtype)
    Y = np.eye(CLASSES, dtype=dtype)[rng.integers(0, CLASSES, N)]
    variants, steps, modules = {}, {}, {}
    for kind in KINDS:
        os.makedirs(os.path.join(directory, kind), exist_ok=True)
        module = modules[kind] = generated_module(spec(kind), os.path.join(directory, kind))
        params = module.init_params(0, dtype=dtype)
        masks = module.draw_masks(N, dtype=dtype) if kind == "dropout" else {}
        steps[kind] = functools.partial(training_step, module, params, X, Y, masks)
        variants[f"{kind}: generated"] = steps[kind]
        weights = [params[name] for name in weight_names(params)]
        variants[f"{kind}: BLAS floor"] = matmul_bound(weights, [0] * len(weights), X)  # the products alone
        timed, reference = torch_step(kind, params, X, Y, masks)
        if timed is not None:
            ours, theirs = steps[kind](), reference()
            for name, value in ours.items():  # like for like: the same gradients (in norm: a float32 ReLU may
                assert value.dtype == dtype, (kind, name, value.dtype)  # flip where rounding moves Z across 0;
                error = np.linalg.norm(value - theirs[name]) / np.linalg.norm(theirs[name])  # one unit of the
                assert error < (5e-3 if dtype == np.float32 else 1e-9), (kind, name, error)  # dropout net's 524,288
                # flips and moves dW1 by 1.1e-3; float64 agrees to 1e-15)
            variants[f"{kind}: PyTorch eager"] = timed
    before = load_note()
    times = interleaved_ms(variants, repeats)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    faults = {kind: faults_per_step(modules[kind], dtype) for kind in KINDS}
    print(f"\n{np.dtype(dtype).name}, N = {N}, 784 -> [1024 -> LAYER -> ReLU] x 2 -> 10, softmax CE, one thread "
          f"(median of {repeats}; {before} before, {load_note()} after)")
    print(f"  {'layer':<10} {'generated':>10} {'BLAS floor':>11} {'gen/floor':>9} {'PyTorch':>9} {'torch/gen':>9}"
          f" {'faults/step':>11} {'adds (ours)':>12} {'adds (torch)':>13} {'ours/torch':>10}")
    for kind in KINDS:
        ours, floor = medians[f"{kind}: generated"], medians[f"{kind}: BLAS floor"]
        torch_ms = medians.get(f"{kind}: PyTorch eager")
        line = f"  {kind:<10} {ours:8.2f}ms {floor:9.2f}ms {ours / floor:9.3f}"
        line += f" {torch_ms:7.2f}ms {torch_ms / ours:9.2f}" if torch_ms else f" {'-':>9} {'-':>9}"
        line += f" {faults[kind]:11.0f}"
        if kind != "plain":
            added = paired_difference(times, f"{kind}: generated", "plain: generated")
            line += f" {added:10.2f}ms"
            if torch_ms:
                torch_added = paired_difference(times, f"{kind}: PyTorch eager", "plain: PyTorch eager")
                line += f" {torch_added:11.2f}ms {added / torch_added:10.2f}" if torch_added > 0 else \
                    f" {torch_added:11.2f}ms {'-':>10}"
        print(line + f"   goal gen/floor <= {GOALS['floor'][kind]:.2f}")
    print(f"  goal: what batch norm adds to ours <= {GOALS['adds']}x what it adds to PyTorch's")
    return medians


def main(repeats: int | None = None) -> dict:
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", "10"))
    results = {}
    with tempfile.TemporaryDirectory() as directory, one_blas_thread() as limits:
        sys.dont_write_bytecode = True
        print("BLAS floor per layer kind:", blas_description(),
              "" if not isinstance(limits, str) else f"({limits})")
        for dtype in (np.float32, np.float64):
            results[np.dtype(dtype).name] = bench(dtype, directory, repeats)
    kernel_floors()
    return results


if __name__ == "__main__":
    main()
