"""Derivation -> the lines of the generated NumPy module: forward and backward code, helpers, what to cache.

Every line is printed from the derivation's own expressions (``printing.NumPyPrinter``); this module decides
the names and the order. Each backward line computes the form the derivation marks for code (batch norm's
compact ``dX``, a fused sigmoid/softmax and cross-entropy gradient), and only the lines a returned gradient
needs are kept. Names are allocated once for the whole module, so no helper, kept local gradient or loop
variable can collide with a user's input name, and each is a valid Python identifier.

The cache ``forward`` returns holds exactly what ``backward`` reads, under the names the derivation uses
(``X``, ``a1``, ``Z2``, ``xhat2``, ``M3``, and kept local gradients ``d<a>_d<Z>``): a stable interface that
graders and tests rely on.
"""

from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass, replace

import sympy as sp

from .expressions import Block, CausalSoftmax, Elementwise, Im2col, LogSoftmax, Sigmoid, Softmax
from .printing import (
    NumPyPrinter,
    _flat_coeff_matrices,
    concatenated,
    is_broadcast,
    shape_text,
    spread_vector,
    text,
    text_name,
)
from .rules import activation_rule, loss_rule, numpy_loss_code, numpy_penalty_code

# How the generated ``init_params`` draws each kind of parameter (``{shape}``, ``{fan_in}`` filled in).
INITIALIZERS = {
    "weight": "rng.standard_normal({shape}) / np.sqrt({fan_in})",
    "bias": "0.1 * rng.standard_normal({shape})",
    "scale": "1 + 0.1 * rng.standard_normal({shape})",
    "shift": "0.1 * rng.standard_normal({shape})",
    "slope": "0.25 + 0.05 * rng.standard_normal({shape})",
    "embedding": "rng.standard_normal({shape})",
}
# How ``_data`` draws targets of each kind (batch-first, ``n`` samples (with steps: ``n, T``), ``k`` outputs).
TARGETS = {
    "real": "rng.standard_normal(({n}, {k}))",
    "distribution": "softmax(rng.standard_normal(({n}, {k})), axis=-1)",
    "binary": "rng.random(({n}, {k}))",
    "one_hot": "np.eye({k})[rng.integers(0, {k}, {n})]",
}
# Names the module (and the notebook around it) defines at the top level or uses in every function.
_MODULE_NAMES = {"np", "erf", "math", "SIZES", "BATCH_FIRST", "params", "cache", "grads", "lr", "rng", "seed",
                 "dtype", "eps", "masks", "init_params", "draw_masks", "forward", "loss", "backward", "sgd_step",
                 "gradient_check", "softmax", "log_softmax", "sigmoid", "weights", "value", "N", "n", "name",
                 "array", "index", "numeric", "worst", "scale", "noise", "saved", "up", "down", "step", "updated",
                 "params32", "masks32", "grads32", "rounding", "coarse", "estimate", "h", "drift",
                 "DEMO_MAX_PARAMETERS", "error", "Y", "Y_pred", "Y_true", "causal_softmax", "place", "scatter_rows",
                 "shape", "classes", "CACHE_KEYS", "PARAMETER_COUNT", "_data", "IMAGE_SHAPE", "im2col", "col2im",
                 "fold", "unfold", "first_max_mask", "row_max", "unfold_t_dot", "unfold_sums", "col2im_unfold_dot",
                 "row_dots", "time_step", "release_buffers",
                 # and the notebook's own cells, which run beside the module's code
                 "losses", "plt", "matplotlib", "example", "teacher", "targets", "trial", "objective", "loss_before",
                 "loss_after", "params_after", "X_train", "Y_train", "xlabel", "ylabel", "font", "hangul",
                 "installed", "font_manager", "T"}


@dataclass(frozen=True)
class Line:
    """One line of code, ``target = code`` (or ``target += code``, ``-=``, as ``augmented`` says), with its comment: a
    formula, said (in the output's language) to be a local gradient kept for backward where ``kept``, and
    to be the shorter form ``form`` (a label of the catalog's ``form_<label>``) where one is named."""

    target: str
    code: str
    comment: str = ""
    augmented: str = ""  # "+" or "-": ``target += code`` or ``target -= code``
    kept: bool = False
    form: str = ""


class _Names:
    """Identifiers taken in the module; ``fresh`` hands out a valid one that is not."""

    def __init__(self, taken):
        # Python's builtins too: a custom activation named print, range or float must not replace them.
        self.taken = set(taken) | _MODULE_NAMES | set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))

    def fresh(self, wanted: str) -> str:
        name = re.sub(r"\W", "_", wanted)
        name = name if name and not name[0].isdigit() else f"f_{name}"
        candidate, suffix = name, 1
        while candidate in self.taken:
            suffix += 1
            candidate = f"{name}_{suffix}"
        self.taken.add(candidate)
        return candidate


def module_value(network, name: str, value):
    """A value of the derivation's input or targets (or the input's gradient, ``name`` the input's) as the
    generated module takes or returns it: token ids instead of their one-hot rows, and a sequence stacked by
    step (T N rows) as (N, T, ...)."""
    steps = network.spec.input.steps
    ids = name == network.input_name and network.roles[name] == "ids"
    if ids:
        value = value.reshape(value.shape[0], -1, network.spec.input.vocab).argmax(axis=-1)
    if name == network.input_name and name in network.module_shapes:  # images: (N, C, H, W)
        value = value.reshape(-1, *network.module_shapes[name])
    if steps and network.inputs[name].shape[0] != network.N:  # a sequence, stacked by step
        value = value.reshape(steps, -1, value.shape[-1]).swapaxes(0, 1)
        value = value[..., 0] if ids else value
    return value


def module_context(derivation, printer: type[NumPyPrinter] = NumPyPrinter) -> dict:
    """Everything the NumPy template needs: names, helpers, forward and backward lines, cache, loss code.
    ``printer`` prints the lines for another array library (``frameworks.py``: PyTorch, JAX)."""
    return _Module(derivation, printer).context()


class _Module:
    def __init__(self, derivation, printer: type[NumPyPrinter] = NumPyPrinter):
        self.d, self.net = derivation, derivation.network
        self.printer_class = printer
        self.fused = printer is NumPyPrinter  # NumPy's own passes (np.einsum, out=); other libraries print plainly
        net = self.net
        self.widths = net.sizes(0, net.spec.sizes)
        del self.widths[net.N]
        self.sizes = {**self.widths, net.N: "N"}
        names = {*net.inputs, *(s.name for s in net.steps), *(s.symbol.name for s in derivation.backward)}
        self.names = _Names(names)
        self.ids = frozenset(name for name in net.inputs if net.roles[name] == "ids")
        self.real_input = net.input_name not in self.ids
        # An attention network's rows are the positions of one sequence: its code also takes (B, T, n) arrays.
        self.positions = net.N if net.attends else None
        self.code = self._code_forms()
        self.backward = self._needed()
        self.outputs = self._outputs()
        self.kept = self._kept_local_gradients()
        self.helpers, self.helper_names = self._helpers()

    # -- what backward computes
    def _code_forms(self) -> dict:
        """Each backward step's code form by gradient name. For NumPy, a form that reads an upstream gradient
        scaled by broadcast vectors (``dxhat = dA ⊙ 1 gamma``) only inside sums over the axis they repeat along is
        rewritten to reuse sums an earlier line holds: ``1ᵀ (dA ⊙ 1 gamma) = gamma ⊙ 1ᵀ dA = gamma ⊙ dbeta``
        (batch norm's dX from dgamma and dbeta: two sums and the pass that scales dA fewer), when that leaves
        fewer sums over full arrays."""
        forms, sums, scaled = {}, {}, {}
        for step in self.d.backward:
            expr = step.code_expr
            if self.fused and scaled:
                expr = _reusing_sums(expr, scaled, sums)
            forms[step.symbol.name] = expr
            if _sum_count(expr) == 1 and 1 in step.shape:
                sums[expr] = step.symbol
            if _scaled_gradient(expr):
                scaled[step.symbol] = expr
        return forms

    def _needed(self) -> list:
        """The backward steps a returned gradient (a parameter's or the input's) depends on, in order."""
        net = self.net
        wanted = {*net.parameters, *([net.input_name] if self.real_input else [])}
        needed = set()
        for step in reversed(self.d.backward):
            if step.name in wanted or step.symbol.name in needed:
                needed |= {symbol.name for symbol in self.code[step.symbol.name].atoms(sp.MatrixSymbol)}
                needed.add(step.symbol.name)
        return [step for step in self.d.backward if step.symbol.name in needed]

    def _outputs(self) -> dict:
        """Pre-activation symbol -> the name of the activation computed from it (``Z1`` -> ``a1``)."""
        return {step.expr.arg: step.name for step in self.net.steps
                if isinstance(step.expr, Elementwise) and step.expr.order == 0}

    def _kept_local_gradients(self) -> dict:
        """Pre-activation -> the variable holding ``f'(Z)``, computed during the forward pass instead of keeping
        ``Z``, for activations whose derivative cannot be written with their output (ReLU's mask)."""
        kept = {}
        used = set().union(*(self.code[s.symbol.name].atoms(Elementwise) for s in self.backward))
        for step in self.net.steps:
            node = step.expr
            if not (isinstance(node, Elementwise) and node.order == 0 and node.activation != "identity"):
                continue
            if activation_rule(node.activation).numpy_derivative_from_output:
                continue
            if node.derivative() in used:
                kept[node.arg] = self.names.fresh(f"d{step.name}_d{node.arg.name}")
        return kept

    def _helpers(self) -> tuple[dict, dict]:
        """The module's functions for elementwise nodes: name -> (argument, NumPy code); and their names."""
        nodes = []
        for step in self.net.steps:
            nodes += _elementwise(step.expr)
        for step in self.backward:
            nodes += _elementwise(self.code[step.symbol.name])
        for arg in self.kept:
            nodes.append(next(s.expr.derivative() for s in self.net.steps if isinstance(s.expr, Elementwise)
                              and s.expr.arg == arg and s.expr.order == 0))
        helpers, names = {}, {}
        for node in nodes:
            if node.activation == "identity":
                continue
            rule = activation_rule(node.activation)
            from_output = (node.order == 1 and node.arg in self.outputs and node.arg not in self.kept
                           and rule.numpy_derivative_from_output is not None)
            key = (node.key, node.order, from_output)
            if key in names:
                continue
            base = f"{rule.name}{'_grad' if node.order else ''}{'_from_output' if from_output else ''}"
            names[key] = self.names.fresh(base)
            helpers[names[key]] = (("a", rule.numpy_from_output(node.params, a="a")) if from_output
                                   else ("z", rule.numpy(node.order, node.params, z="z")))
        return helpers, names

    def printer(self, in_place=False, kept=True) -> NumPyPrinter:
        return self.printer_class(self.sizes, self.outputs, in_place, self.kept if kept else {},
                                  self.helper_names, self.ids, self.positions, fused=self.fused)

    # -- lines
    def forward_lines(self, backward_reads=frozenset()) -> list[Line]:
        """The forward pass's lines; ``backward_reads``: the names backward's code reads (kept alive)."""
        lines = []
        dead = self._dead_after(backward_reads) if self.fused else {}
        for step in self.net.steps:
            if step.kind == "loss":
                continue
            comment = f"{step.name} = {text(step.expr)}  ({shape_text(step.symbol.shape)})"
            node = step.expr
            if isinstance(node, Elementwise) and node.arg in self.kept:
                derivative = node.derivative()
                lines.append(Line(self.kept[node.arg], self.printer(kept=False).doprint(derivative),
                                  f"∂{step.name}/∂{node.arg.name} = {text(derivative)}", kept=True))
            product, broadcast = _split_broadcast(step.expr)
            if broadcast is not None:
                lines.append(Line(step.name, self.printer().doprint(product), comment))
                lines.append(Line(step.name, self.printer().doprint(broadcast), augmented="+"))
            else:
                free = dead.get(step.name, set())
                code = self._relu(step, free)
                written = None if code else self._in_place(step.name, step.expr, free, comment)
                lines += written or [Line(step.name, code or self.printer().doprint(step.expr), comment)]
        return lines

    def _dead_after(self, backward_reads) -> dict:
        """Forward step -> the arrays it reads that forward computed and nothing reads after it (no later step,
        not backward, under no other name: ``a1 = Z1`` shares Z1's array), which it may overwrite."""
        steps = [step for step in self.net.steps if step.kind != "loss"]
        computed = {step.name for step in steps}
        array = {}  # name -> the name of the array it is (an identity step shares its operand's, a block is a view)
        for step in steps:
            node = step.expr
            if isinstance(node, Elementwise) and node.activation == "identity" and node.order == 0 \
                    or isinstance(node, Block):
                node = node.arg
            array[step.name] = array.get(node.name, node.name) if isinstance(node, sp.MatrixSymbol) else step.name
        live = {array.get(name, name) for name in {*backward_reads, "Y_pred"}}
        dead = {}
        for step in reversed(steps):
            reads = {symbol.name for symbol in step.expr.atoms(sp.MatrixSymbol) if symbol.name in computed}
            dead[step.name] = {name for name in reads if array[name] in computed and array[name] not in live}
            live |= {array[name] for name in reads}
        return dead

    def _relu(self, step, dead) -> str | None:
        """NumPy's ``ReLU(X)``: X times its mask where forward keeps the mask for backward (one multiplication,
        about half the time of ``np.maximum``, which checks for NaN), written into X's own array when X is
        ``dead`` after this step: no new array, so no fresh memory to fault in. Otherwise
        ``np.maximum(X, 0, out=X)`` in place, or None (the printer's ``np.maximum``). At X = -inf, where the step
        has already overflowed, the product is NaN instead of 0."""
        node = step.expr
        if not (self.fused and isinstance(node, Elementwise) and node.order == 0
                and isinstance(node.arg, sp.MatrixSymbol) and node.arg.shape == step.symbol.shape):
            return None
        name = node.arg.name
        if activation_rule(node.activation).numpy(0, dict(node.params), z=name) != f"np.maximum({name}, 0)":
            return None
        in_place = name in dead
        if node.arg in self.kept:
            mask = self.kept[node.arg]
            return f"np.multiply({name}, {mask}, out={name})" if in_place else f"{name} * {mask}"
        return f"np.maximum({name}, 0, out={name})" if in_place else None

    def backward_lines(self) -> list[Line]:
        lines = []
        array = {}  # gradient -> the gradient whose array it is: an alias (``da1 = da2``) or a block of one (a view)
        aliased = set()  # both names of a plain alias, never written in place
        for i, step in enumerate(self.backward):
            code = self._code(i)
            if isinstance(code, sp.MatrixSymbol):
                aliased |= {code.name, step.symbol.name}
            operand = code.arg if isinstance(code, Block) else code
            if isinstance(operand, sp.MatrixSymbol):
                array[step.symbol.name] = array.get(operand.name, operand.name)
        later_reads = [set() for _ in self.backward]  # the arrays that lines after each one read
        for i in range(len(self.backward) - 2, -1, -1):
            later_reads[i] = later_reads[i + 1] | {array.get(s.name, s.name)
                                                   for s in self._code(i + 1).atoms(sp.MatrixSymbol)}
        for i, (step, reads) in enumerate(zip(self.backward, later_reads)):
            expr = self._code(i)
            # arrays backward made itself (or views of them) that no later line reads under any name
            free = {earlier.symbol.name for earlier in self.backward[:i]
                    if array.get(earlier.symbol.name, earlier.symbol.name) not in reads} - aliased
            upstream = _upstream_of_product(expr)
            in_place = upstream is not None and upstream in free
            form = next((alt.label for alt in step.alternatives if alt.expr == step.code_expr), "")
            comment = f"{text_name(step.symbol.name)} = {text(step.code_expr)}  ({shape_text(step.shape)})"
            written = self._in_place(step.symbol.name, expr, free, comment, form) if self.fused else None
            lines += written or [Line(step.symbol.name, self.printer(in_place).doprint(expr), comment, form=form)]
        return _unfolded_products(lines) if self.fused else lines

    def _in_place(self, target: str, expr, free: set, comment: str, form: str = "") -> list[Line] | None:
        """The lines of ``target = expr`` written into the array of a term ``G ⊙ 1 v`` whose G is ``free`` (no
        later line reads it, under no other name): the other terms' vectors that read G first (layer norm's row
        sums of dxhat), then ``np.multiply(G, v, out=G)``, then each other term added or subtracted in place
        (batch norm's centred and normalized input, batch and layer norm's compact dX): no fresh array for the
        result or for any term. None where no term's array is free (or there is nothing to write)."""
        if isinstance(expr, sp.MatrixSymbol) or concatenated(expr) is not None:
            return None
        printer = self.printer()
        terms = printer._terms(expr)

        def reads(parts) -> set:
            return {s.name for part in parts for s in sp.sympify(part).atoms(sp.MatrixSymbol)}

        lead = next((term for term in terms if len(term[1]) == 1 and isinstance(term[1][0], sp.MatrixSymbol)
                     and term[1][0].shape == expr.shape and term[1][0].name in free
                     and not term[0].could_extract_minus_sign() and term[1][0].name not in reads(term[2])
                     and not any(term[1][0].name in reads(other[1]) for other in terms if other is not term)), None)
        if lead is None:
            return None
        coeff, (G,), rows = lead
        hoisted, rest = [], []
        for term_coeff, fulls, term_rows in (term for term in terms if term is not lead):
            kept_rows = []
            for row in term_rows:
                if G.name in reads([row]):  # computed before G's array changes
                    name = f"{G.name}_sum{len(hoisted) + 1}"
                    hoisted.append((name, printer.doprint(row)))
                    row = sp.MatrixSymbol(name, *row.shape)
                kept_rows.append(row)
            negative = term_coeff.could_extract_minus_sign()
            rest.append(("-" if negative else "+", printer._term(-term_coeff if negative else term_coeff, fulls,
                                                                 kept_rows)))
        if coeff == 1 and not rows and not rest:
            return None  # target = G: an alias, nothing to write
        first = G.name if coeff == 1 and not rows else \
            f"np.multiply({G.name}, {printer._term(coeff, [], rows) if rows else printer._print(coeff)}, out={G.name})"
        return [*(Line(name, code) for name, code in hoisted), Line(target, first, comment, form=form),
                *(Line(target, code, augmented=operator) for operator, code in rest)]

    def _code(self, index: int):
        return self.code[self.backward[index].symbol.name]

    def cached(self, forward: list[Line], backward: list[Line]) -> list[str]:
        """The forward names a backward line reads, in forward order."""
        read = set()
        for line in backward:
            read |= set(re.findall(r"[A-Za-z_]\w*", line.code))
        names = [self.net.input_name, *self.net.masks, *(line.target for line in forward if not line.augmented)]
        return [name for name in dict.fromkeys(names) if name in read]

    def context(self) -> dict:
        net, spec = self.net, self.net.spec
        backward = self.backward_lines()
        forward = self.forward_lines(set().union(*(re.findall(r"[A-Za-z_]\w*", line.code) for line in backward)))
        cached = self.cached(forward, backward)
        if self.fused:
            forward, backward = [_into_buffer(line) for line in forward], [_into_buffer(line) for line in backward]
        settings = spec.loss
        nodes = [node for step in net.steps for node in step.expr.atoms(Sigmoid, Softmax, LogSoftmax)]
        nodes += [node for step in self.backward for node in self.code[step.symbol.name].atoms(Sigmoid, Softmax,
                                                                                               LogSoftmax)]
        k = spec.sizes[-1]
        sequences = self._sequence_context()
        return {
            "forward_lines": forward,
            "backward_lines": backward,
            "cached": cached,
            "helpers": _used(self.helpers, [line.code for line in (*forward, *backward)]),
            "helper_names": self.helper_names,
            "parameters": [{"name": name, "shape": self._module_shape(name),
                            "init": INITIALIZERS[net.initializers[name][0]].format(
                                shape=self._module_shape(name),
                                fan_in=_literal(net.initializers[name][1] or 1, self.sizes))}
                           for name in net.parameters],
            "masks": [{"name": name, "shape": _literal_shape(net.inputs[name].shape, {**self.sizes, net.N: "n"}),
                       "keep": net.initializers[name][1]} for name in net.masks],
            "parameter_count": sum(int(sp.prod(net.inputs[name].shape).xreplace(self.widths))
                                   for name in net.parameters),
            "backward_params": [name for name in net.parameters
                                if any(re.search(rf"\b{name}\b", line.code) for line in backward)],
            "returned": [(name, f"d{name}.reshape{self._module_shape(name)}" if name in net.module_shapes else
                          f"d{name}") for name in net.parameters],
            "real_input": self.real_input,
            # images: the input's sample shape (C, H, W) or (C, L), and the weights kept 4-D (3-D) in params
            "image_shape": net.module_shapes.get(net.input_name),
            "matrix_views": [(name, _literal_shape(net.inputs[name].shape, self.sizes)) for name in net.parameters
                             if name in net.module_shapes],
            "needs_images": any(node for step in net.steps for node in step.expr.atoms(Im2col)),
            **sequences,
            "uses_batch_size": bool(re.search(r"\bN\b", " ".join(line.code for line in backward))),
            "forward_uses_batch_size": bool(re.search(r"\bN\b", " ".join(line.code for line in forward))),
            "needs_erf": "erf(" in " ".join(code for _, code in self.helpers.values()),
            "needs_sigmoid": any(isinstance(node, Sigmoid) for node in nodes),
            "needs_causal_softmax": any(isinstance(node, CausalSoftmax) for node in nodes),
            "needs_place": _calls("place", [line.code for line in (*forward, *backward)]),
            "needs_sequences": any("_seq(" in line.code for line in (*forward, *backward)),
            "needs_buffers": any("_buffer(" in line.code for line in (*forward, *backward)),
            "needs_row_dots": any("row_dots(" in line.code for line in (*forward, *backward)),
            "image_helpers": _image_helpers([line.code for line in (*forward, *backward)]),
            "needs_scatter": any("scatter_rows(" in line.code for line in backward),
            "needs_softmax": any(type(node) is Softmax for node in nodes)
                             or loss_rule(settings).targets == "distribution",
            "needs_log_softmax": any(isinstance(node, LogSoftmax) for node in nodes),
            "loss_code": numpy_loss_code(settings, self.positions is not None),
            "stacked": self.positions is not None,
            "penalty_code": numpy_penalty_code(settings) if settings.l2 else "",
            "penalty_weights": [name for name in net.parameters if net.initializers[name][0] == "weight"],
            "targets_code": TARGETS[loss_rule(settings).targets].format(
                k=k, n=f"n, {spec.input.steps}" if sequences["targets_per_step"] else "n"),
        }

    def _module_shape(self, name: str) -> str:
        """The shape the module gives a parameter: its own (a convolution's (F, C, kh, kw)) or the matrix's."""
        shape = self.net.module_shapes.get(name)
        return repr(tuple(shape)) if shape else _literal_shape(self.net.inputs[name].shape, self.sizes)

    def _sequence_context(self) -> dict:
        """How the module's arrays meet the derivation's matrices: token ids, sequences stacked by step.

        A sequence input is (N, T, d) (ids: (N, T)) and the derivation stacks it by step into T N rows; targets
        over every step are (N, T, k) or class ids (N, T); class ids of shape (N,) become one-hot rows."""
        spec = self.net.spec
        steps = spec.input.steps
        Y = self.net.inputs["Y_true"]
        per_step = steps is not None and Y.shape[0] != self.net.N
        return {"steps": steps, "ids_input": not self.real_input, "vocab": spec.input.vocab,
                "context": spec.input.context, "targets_per_step": per_step,
                "class_targets": loss_rule(spec.loss).targets in ("one_hot", "distribution")}


def _elementwise(expr) -> list:
    return sorted(expr.atoms(Elementwise), key=str)


def _sum_count(expr) -> int:
    """How many sums over an axis of a full array ``expr`` computes (``1ᵀ M``, ``M 1``)."""
    count = 0
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.MatMul):
            _, matrices = _flat_coeff_matrices(node)
            if len(matrices) > 1:
                count += isinstance(matrices[0], sp.OneMatrix) and matrices[0].shape[1] != 1
                count += isinstance(matrices[-1], sp.OneMatrix) and matrices[-1].shape[0] != 1
    return count


def _scaled_gradient(expr) -> bool:
    """Whether ``expr`` is a gradient times broadcast vectors (``dA ⊙ 1 gamma``)."""
    if not isinstance(expr, sp.HadamardProduct):
        return False
    vectors = [arg for arg in expr.args if spread_vector(arg) is not None]
    rest = [arg for arg in expr.args if spread_vector(arg) is None]
    return bool(vectors) and len(rest) == 1 and isinstance(rest[0], sp.MatrixSymbol) and rest[0].name.startswith("d")


def _reusing_sums(expr, scaled: dict, sums: dict):
    """``expr`` with the scaled gradients it reads written out, their vectors taken out of the sums along the
    axis they repeat along, and each sum an earlier line holds (``sums``: form -> name) read from that line;
    ``expr`` itself where this leaves a scaled gradient read or no fewer sums."""
    inlined = expr.xreplace({name: form for name, form in scaled.items() if expr.has(name)})
    if inlined == expr:
        return expr
    rewritten = _vectors_out_of_sums(inlined).xreplace(sums)
    if any(rewritten.has(name) for name in scaled) or _sum_count(rewritten) >= _sum_count(expr):
        return expr
    return rewritten


def _hadamard_factors(expr) -> list:
    if isinstance(expr, sp.HadamardProduct):
        return [f for arg in expr.args for f in _hadamard_factors(arg)]
    return [expr]


def _vectors_out_of_sums(expr):
    """``1ᵀ (A ⊙ 1 v) = v ⊙ 1ᵀ A`` (and ``(A ⊙ v 1ᵀ) 1 = v ⊙ A 1``) throughout ``expr``."""
    if not isinstance(expr, sp.MatrixExpr) or isinstance(expr, (sp.MatrixSymbol, sp.OneMatrix)):
        return expr
    args = [_vectors_out_of_sums(arg) for arg in expr.args]
    if isinstance(expr, sp.HadamardProduct):
        return sp.hadamard_product(*(f for arg in args for f in _hadamard_factors(arg)))
    expr = expr.func(*args)
    if not isinstance(expr, sp.MatMul):
        return expr
    coeff, matrices = _flat_coeff_matrices(expr)
    for axis, (ones, product) in enumerate(((matrices[0], matrices[-1]), (matrices[-1], matrices[0]))):
        if len(matrices) != 2 or not isinstance(ones, sp.OneMatrix) or not isinstance(product, sp.HadamardProduct):
            continue
        summed = ones.shape[1 - axis]
        if ones.shape[axis] != 1:  # 1 1ᵀ M: the sum 1ᵀ M repeated
            spread = sp.OneMatrix(ones.shape[0], 1) if axis == 0 else sp.OneMatrix(1, ones.shape[1])
            inner = sp.OneMatrix(1, summed) * product if axis == 0 else product * sp.OneMatrix(summed, 1)
            inner = _vectors_out_of_sums(inner)
            return coeff * (spread * inner if axis == 0 else inner * spread)
        factors = _hadamard_factors(product)
        pulled = [spread_vector(f) for f in factors]
        vectors = [p for p in pulled if p is not None and p[2] == axis]
        if not vectors:
            continue
        rest = [f for f, p in zip(factors, pulled) if p is None or p[2] != axis]
        rest = rest[0] if len(rest) == 1 else sp.hadamard_product(*rest)
        total = ones * rest if axis == 0 else rest * ones
        for c, _, _ in vectors:
            coeff *= c
        return coeff * sp.hadamard_product(*(v for _, v, _ in vectors), total)
    return expr


def _split_broadcast(expr):
    """``P + 1 b`` -> (``P``, ``1 b``), so the module adds a broadcast bias in place; else (expr, None)."""
    if not isinstance(expr, sp.MatAdd) or len(expr.args) != 2:
        return expr, None
    first, second = expr.args
    for product, bias in ((first, second), (second, first)):
        if is_broadcast(bias) and not is_broadcast(product) and isinstance(product, (sp.MatMul, sp.HadamardProduct)):
            return product, bias
    return expr, None


def _calls(name: str, code: list[str]) -> bool:
    """Whether one of the lines ``code`` calls the module's function ``name`` (not a method or a longer name)."""
    return any(re.search(rf"(?<![\w.]){name}\(", line) for line in code)


def _used(helpers: dict, code: list[str]) -> dict:
    """The helpers that the lines ``code`` call, directly or through another helper (ReLU itself is not called
    where it is written as the input times its kept mask)."""
    called, text = set(), code
    while True:
        more = {name for name in helpers if name not in called and _calls(name, text)}
        if not more:
            return {name: value for name, value in helpers.items() if name in called}
        called |= more
        text = [helpers[name][1] for name in more]


# Output positions per image from which a convolution's backward reads δ's maps as they are, without the copy
# of unfold(δ) (benchmarks/conv.py's sweep, one core: faster at 121 positions and more, slower at 64 and fewer).
UNFOLDED_POSITIONS = 128
_UNFOLD = re.compile(r"unfold\((\w+), (\d+)\)")
_HOLE = "\0"  # where a line reads unfold(δ), while its reads are rewritten


def _unfolded_products(lines: list[Line]) -> list[Line]:
    """A convolution's backward without the copy ``δcol = unfold(δ)`` (a transposition of every sample's maps)
    where it has enough positions and only products read it: ``δcolᵀ Xcol`` (the whole line, or a term in
    parentheses beside weight decay's) as ``unfold_t_dot`` (each sample's maps times its rows of Xcol, summed),
    ``1ᵀ δcol`` as ``unfold_sums``, and ``col2im(δcol W)`` as ``col2im_unfold_dot`` (each kernel offset's slice
    of W times the maps, added into the image), which also spares the array ``δcol W``. The formulas of the
    lines left out stay in the comments."""
    for line in lines:
        unfold = _UNFOLD.fullmatch(line.code)
        if line.augmented or unfold is None or int(unfold[2]) < UNFOLDED_POSITIONS:
            continue
        readers = [other for other in lines if re.search(rf"\b{line.target}\b", other.code)]
        if not readers:
            continue
        G, positions = unfold.groups()
        rewritten, dropped = {}, [line]
        for reader in readers:
            code = re.sub(rf"\b{line.target}\b", _HOLE, reader.code)
            product = re.fullmatch(rf"{_HOLE} @ (\w+)", code)
            if product:  # δcol W, which only col2im may read
                users = [other for other in lines if re.search(rf"\b{reader.target}\b", other.code)]
                window = re.fullmatch(rf"col2im\({reader.target}, (shape=.*)\)", users[0].code) if len(users) == 1 \
                    else None
                if window is None:
                    break
                rewritten[users[0]] = replace(users[0], code=f"col2im_unfold_dot({G}, {product[1]}, {window[1]})",
                                              comment=f"{users[0].comment}; {reader.comment.split('  (')[0]}")
                dropped.append(reader)
                continue
            for pattern in (rf"^{_HOLE}\.T @ (\w+)$", rf"\({_HOLE}\.T @ (\w+)\)"):
                code = re.sub(pattern, rf"unfold_t_dot({G}, \1, {positions})", code)
            code = code.replace(f"{_HOLE}.sum(axis=0, keepdims=True)", f"unfold_sums({G}, {positions})")
            if _HOLE in code:
                break
            rewritten[reader] = replace(reader, code=code)
        else:
            first = next(iter(rewritten))
            rewritten[first] = replace(rewritten[first],
                                       comment=f"{rewritten[first].comment}; {line.comment.split('  (')[0]}")
            return _unfolded_products([rewritten.get(other, other) for other in lines if other not in dropped])
    return lines


def _image_helpers(code: list[str]) -> set[str]:
    """The module's image helpers that the lines ``code`` call (first_max_mask calls row_max)."""
    called = {name for name in ("col2im", "fold", "unfold", "first_max_mask", "row_max", "unfold_t_dot",
                                "unfold_sums", "col2im_unfold_dot") if _calls(name, code)}
    return called | ({"row_max"} if "first_max_mask" in called else set())


_PRODUCT = re.compile(r"([A-Za-z_]\w*(?:\.T)?) @ ([A-Za-z_]\w*(?:\.T)?)")


def _into_buffer(line: Line) -> Line:
    """A line that is one matrix product, ``A @ B``, written into the array the same line made in an earlier step
    where nothing holds it any more (the module's ``_buffer``): the step's large new arrays are its products, and
    reusing theirs spares the fresh memory that the allocator would otherwise map and fault in page by page."""
    product = _PRODUCT.fullmatch(line.code)
    if line.augmented or product is None:
        return line
    A, B = product.groups()
    return replace(line, code=f'np.matmul({A}, {B}, out=_buffer("{line.target}", {A}, {B}))')


def _upstream_of_product(expr) -> str | None:
    """The upstream gradient ``dA`` of ``dA ⊙ factor``, which may be updated in place, else None."""
    if isinstance(expr, sp.HadamardProduct) and len(expr.args) == 2:
        names = [arg.name for arg in expr.args if isinstance(arg, sp.MatrixSymbol) and arg.name.startswith("d")]
        if len(names) == 1:
            return names[0]
    return None


def _literal(size, sizes):
    """A size as the module writes it: a number, a name from ``sizes`` (``N``), or an expression of them
    (``3*n``: the rows of a sequence stacked by step)."""
    if size in sizes:
        return sizes[size]
    return sp.sympify(size).xreplace({k: v if isinstance(v, int) else sp.Symbol(v) for k, v in sizes.items()})


def _literal_shape(shape, sizes) -> str:
    return "(" + ", ".join(str(_literal(d, sizes)) for d in shape) + ")"

