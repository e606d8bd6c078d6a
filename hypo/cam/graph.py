"""The graph a CAM is computed on: every layer of a model, nested models included.

A Keras functional model that holds another model as a layer (a Keras Applications
backbone under a new head, a Sequential block) keeps the inner layers' symbolic outputs in
the inner model's own graph, unreachable from the outer inputs. :func:`trace` re-calls the
outer graph node by node on the outer inputs, descending into functional and Sequential
sub-models and unrolling ``TimeDistributed`` over its time axis, so that every inner
layer's output is a tensor of one graph from the outer inputs to the outer score. A model
without nested models or wrappers is read as it is (no layer is called again).

Layers are named by paths: ``"resnet50/conv5_block3_out"`` is the layer
``conv5_block3_out`` of the sub-model ``resnet50``; a top-level layer's path is its name
(Keras forbids ``/`` in names, so paths are unambiguous).

:func:`float32_twin` gives a model whose every layer computes in float32 with the weights
of a mixed-precision model, so maps never inherit bfloat16 rounding.

This module reads two Keras internals that the functional API has kept through Keras 3:
``Functional._nodes_by_depth`` (the graph's nodes in call order) and
``Node.arguments.fill_in`` (a node's call arguments with new tensors substituted); the
functional model's own ``call`` runs the graph the same way.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import keras
import tensorflow as tf

SEP = "/"
_FLOAT_POLICIES = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")


@dataclass
class LayerCall:
    """One call of a layer in the traced graph.

    Attributes
    ----------
    path : str
        ``"outer/inner/name"`` (just ``name`` at the top level).
    layer : keras.Layer
        The layer called (for a nested model's own entry, the nested model).
    outputs : list
        Symbolic output tensors of this call in the traced graph.
    time_steps : int or None
        Set inside an unrolled ``TimeDistributed``: the batch axis of ``outputs`` is then
        (outer batch x ``time_steps``), slices of one sample consecutive.
    container : bool
        This entry is the output of a nested model or wrapper, not of a leaf layer.
    wrapper : str or None
        Path of the enclosing wrapper (``TimeDistributed``), if any.
    """

    path: str
    layer: object
    outputs: list
    time_steps: int | None = None
    container: bool = False
    wrapper: str | None = None


@dataclass
class Graph:
    """A model's layers as one graph from its inputs (see :func:`trace`). It holds no
    reference to the model itself, so caches keyed weakly by the model can release it."""

    inputs: list
    outputs: list
    calls: list[LayerCall]
    nested: bool
    by_path: dict[str, list[LayerCall]] = field(default_factory=dict)
    producer: dict[int, LayerCall] = field(default_factory=dict)

    def __post_init__(self):
        for c in self.calls:
            self.by_path.setdefault(c.path, []).append(c)
            if not c.container:
                for t in c.outputs:
                    self.producer[id(t)] = c

    def upstream(self, tensor) -> set[int]:
        """Ids of the tensors ``tensor`` depends on (itself included)."""
        seen, stack = set(), [tensor]
        while stack:
            t = stack.pop()
            if id(t) in seen:
                continue
            seen.add(id(t))
            hist = getattr(t, "_keras_history", None)
            if hist is not None:
                stack.extend(hist[0]._inbound_nodes[hist[1]].input_tensors)
        return seen


def is_sequential(layer) -> bool:
    return isinstance(layer, keras.Sequential)


def is_functional(layer) -> bool:
    return (
        isinstance(layer, keras.Model)
        and not is_sequential(layer)
        and getattr(layer, "_nodes_by_depth", None) is not None
    )


def is_container(layer) -> bool:
    return is_sequential(layer) or is_functional(layer)


def is_subclassed_model(layer) -> bool:
    return isinstance(layer, keras.Model) and not is_container(layer)


def check_functional(model) -> None:
    """Raise a ``ValueError`` that says what to do when ``model`` has no traceable graph."""
    if is_container(model):
        return
    kind = type(model).__name__
    raise ValueError(
        f"model {getattr(model, 'name', '?')!r} is a subclassed Keras model ({kind}): its "
        "inner tensors exist only while it runs, so hypo.cam cannot reach a layer inside it. "
        "Build it with the functional API (keras.Model(inputs, outputs), or keras.Sequential), "
        "or wrap the spatial part as a functional model and call that inside an outer "
        "functional model: inp = keras.Input(shape); keras.Model(inp, head(backbone(inp)))"
    )


def _needs_recall(model) -> bool:
    layers = model.layers
    return any(is_container(la) or isinstance(la, keras.layers.TimeDistributed) for la in layers)


def trace(model) -> Graph:
    """Every layer call of ``model`` as one graph from ``model.inputs`` (cached per model)."""
    check_functional(model)
    cached = _TRACES.get(model)
    if cached is not None:
        return cached
    calls: list[LayerCall] = []
    if is_sequential(model):
        if not model.built or not getattr(model, "inputs", None):
            raise ValueError(
                f"Sequential model {model.name!r} has no defined input: start it with "
                "keras.Input(shape) so hypo.cam can trace its layers"
            )
        inputs = list(model.inputs)
        out = inputs[0]
        for la in model.layers:
            out = _call(la, (out,), {}, "", calls, None, None)
        outs = [out]
        nested = True
    else:
        nested = _needs_recall(model)
        inputs = list(model.inputs)
        outs = _walk(model, inputs, "", calls, nested, None, None)
    g = Graph(inputs=inputs, outputs=list(outs), calls=calls, nested=nested)
    _TRACES[model] = g
    return g


_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _walk(fn_model, inputs, prefix, calls, recall, steps, wrapper):
    tensor_dict = {id(x): y for x, y in zip(fn_model.inputs, inputs)}
    for depth in sorted(fn_model._nodes_by_depth, reverse=True):
        for node in fn_model._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            if any(id(x) not in tensor_dict for x in node.input_tensors):
                continue
            if recall:
                args, kwargs = node.arguments.fill_in(tensor_dict)
                outs = keras.tree.flatten(_call(op, args, kwargs, prefix, calls, steps, wrapper))
            else:
                outs = list(node.outputs)
                calls.append(LayerCall(prefix + op.name, op, outs, steps, wrapper=wrapper))
            for x, y in zip(node.outputs, outs):
                tensor_dict[id(x)] = y
    return [tensor_dict[id(x)] for x in fn_model.outputs]


def _call(op, args, kwargs, prefix, calls, steps, wrapper):
    path = prefix + op.name
    if is_sequential(op):
        x = keras.tree.flatten(args)[0]
        for la in op.layers:
            x = _call(la, (x,), {}, path + SEP, calls, steps, wrapper)
        calls.append(LayerCall(path, op, [x], steps, container=True, wrapper=wrapper))
        return x
    if is_functional(op):
        flat_in = keras.tree.flatten(args)
        if len(flat_in) != len(op.inputs):
            raise ValueError(
                f"nested model {path!r} takes {len(op.inputs)} inputs but was called with "
                f"{len(flat_in)} tensors; hypo.cam traces nested models called on a tensor or "
                "a list of tensors in input order"
            )
        outs = _walk(op, flat_in, path + SEP, calls, True, steps, wrapper)
        calls.append(LayerCall(path, op, list(outs), steps, container=True, wrapper=wrapper))
        return outs[0] if len(outs) == 1 else outs
    if isinstance(op, keras.layers.TimeDistributed):
        if steps is not None:
            raise ValueError(
                f"TimeDistributed layer {path!r} sits inside another TimeDistributed layer "
                f"({wrapper!r}); hypo.cam unrolls one level of TimeDistributed only"
            )
        x = keras.tree.flatten(args)[0]
        t = x.shape[1]
        if t is None:
            raise ValueError(
                f"TimeDistributed layer {path!r} has a variable number of time steps (input "
                f"shape {tuple(x.shape)}); give the model a fixed bag size, e.g. "
                "keras.Input((n_slices, H, W, 1))"
            )
        inner = keras.ops.reshape(x, (-1, *x.shape[2:]))
        y = _call(op.layer, (inner,), {}, path + SEP, calls, int(t), path)
        y = keras.ops.reshape(y, (-1, int(t), *y.shape[1:]))
        calls.append(LayerCall(path, op, [y], steps, container=True, wrapper=wrapper))
        return y
    out = op(*args, **kwargs)
    calls.append(LayerCall(path, op, keras.tree.flatten(out), steps, wrapper=wrapper))
    return out


class Extractor:
    """Runs the traced graph from its inputs to chosen tensors.

    A ``keras.Model`` over the traced graph would refuse two nested models that both hold
    a layer named ``conv`` (operation names must be unique in one model); this runs the
    same nodes in the same way (each layer called with ``training=False``) without that
    constraint.
    """

    def __init__(self, inputs, outputs):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        known = {id(t) for t in self.inputs}
        order, done = [], set()

        def visit(t):
            if id(t) in known:
                return
            hist = getattr(t, "_keras_history", None)
            if hist is None:
                raise ValueError(f"tensor {t} is not connected to the model inputs")
            node = hist[0]._inbound_nodes[hist[1]]
            if id(node) in done:
                return
            done.add(id(node))
            for x in node.input_tensors:
                visit(x)
            order.append(node)

        for t in self.outputs:
            visit(t)
        self.nodes = order

    def __call__(self, xs, training=False):
        td = {id(i): x for i, x in zip(self.inputs, xs)}
        for node in self.nodes:
            args, kwargs = node.arguments.fill_in(td)
            op = node.operation
            if "training" in getattr(op, "_call_context_args", ()):
                kwargs["training"] = training
            outs = op(*args, **kwargs)
            for t, y in zip(node.outputs, keras.tree.flatten(outs)):
                td[id(t)] = y
        return [td[id(t)] for t in self.outputs]


# ---------------------------------------------------------------------------------------
# Finding a layer by path, name or object
# ---------------------------------------------------------------------------------------


def layer_tree(model, prefix: str = "") -> list[tuple[str, object, str | None]]:
    """``(path, layer, opaque_owner)`` of every layer reachable by attribute, the owner
    being the path of a subclassed model or non-TimeDistributed wrapper that hides it."""
    out = []
    for la in getattr(model, "layers", []):
        if type(la).__name__ == "InputLayer":
            continue
        path = prefix + la.name
        out.append((path, la, None))
        if is_container(la):
            out.extend(layer_tree(la, path + SEP))
        elif isinstance(la, keras.layers.TimeDistributed):
            out.append((path + SEP + la.layer.name, la.layer, None))
            if is_container(la.layer):
                out.extend(layer_tree(la.layer, path + SEP + la.layer.name + SEP))
        elif isinstance(la, keras.layers.Wrapper) or is_subclassed_model(la):
            inner = [la.layer] if isinstance(la, keras.layers.Wrapper) else la.layers
            for sub in inner:
                out.append((path + SEP + sub.name, sub, path))
                for p, s, _ in layer_tree(sub, path + SEP + sub.name + SEP):
                    out.append((p, s, path))
    return out


def path_of(model, layer) -> str:
    """The path of a layer object inside ``model``."""
    for path, la, _ in layer_tree(model):
        if la is layer:
            return path
    raise ValueError(
        f"layer {getattr(layer, 'name', layer)!r} is not part of model {model.name!r} "
        "(nor of any model nested in it)"
    )


def resolve_path(graph: Graph, original, name: str) -> str:
    """Full path of ``name``: a path, a top-level name, or a name unique among the nested
    layers. Raises ``ValueError`` for a layer hidden in a subclassed model or wrapper, or a
    name that several nested models share; ``KeyError`` when there is no such layer."""
    if name in graph.by_path:
        return name
    matches = sorted({c.path for c in graph.calls if _leaf(c.path) == name})
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(
            f"layer name {name!r} occurs in several nested models of {original.name!r}: "
            f"{matches}; give the full path"
        )
    tree = layer_tree(original)
    hidden = [(p, owner) for p, _, owner in tree if owner and (p == name or _leaf(p) == name)]
    if hidden:
        p, owner = hidden[0]
        kind = type(dict((q, la) for q, la, _ in tree)[owner]).__name__
        raise ValueError(
            f"layer {p!r} of model {original.name!r} lives inside {kind} {owner!r}, whose "
            "inner tensors hypo.cam cannot reach. Build that part with the functional API "
            "(a keras.Model or keras.Sequential called as a layer), or choose a layer outside "
            "it (see hypo.cam.spatial_layers(model))"
        )
    raise KeyError(name)


def _leaf(path: str) -> str:
    return path.rsplit(SEP, 1)[-1]


# ---------------------------------------------------------------------------------------
# Float32 twin of a mixed-precision model
# ---------------------------------------------------------------------------------------

_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def precision_policies(model) -> list[str]:
    """Distinct dtype-policy names of the model's layers (nested ones included)."""
    names = {
        getattr(getattr(la, "dtype_policy", None), "name", "float32")
        for _, la, _ in layer_tree(model)
    }
    return sorted(names)


def _is_float32(model) -> bool:
    return all(
        getattr(la, "compute_dtype", "float32") == "float32"
        and getattr(la, "variable_dtype", "float32") == "float32"
        for _, la, _ in layer_tree(model)
    )


def _float32_config(obj):
    """A layer config with every reduced-precision float dtype policy set to float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(
            obj.get("config"), dict
        ):
            if obj["config"].get("name") in _FLOAT_POLICIES:
                return "float32"
            return obj
        return {
            k: (
                "float32"
                if k == "dtype" and isinstance(v, str) and v in _FLOAT_POLICIES
                else _float32_config(v)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    return obj


def _clone_float32(layer):
    return type(layer).from_config(_float32_config(layer.get_config()))


def float32_twin(model, sync: bool = True):
    """``model`` itself if every layer computes in float32, else a float32 clone of it
    (cached per model). With ``sync`` the clone first receives the model's current weights,
    so weights changed in place (a randomisation test) are honoured."""
    if _is_float32(model):
        return model
    twin = _TWINS.get(model)
    if twin is None:
        check_functional(model)
        try:
            twin = keras.models.clone_model(model, clone_function=_clone_float32, recursive=True)
        except Exception as e:  # Keras raises several types for layers it cannot clone
            raise ValueError(
                f"model {model.name!r} computes in {precision_policies(model)}; hypo.cam "
                f"computes maps in float32 and could not clone it with float32 layers ({e}). "
                "Rebuild the model with dtype policy 'float32' and copy its weights"
            ) from e
        if [tuple(w.shape) for w in twin.weights] != [tuple(w.shape) for w in model.weights]:
            raise ValueError(
                f"model {model.name!r}: its float32 clone does not hold the same weights "
                "(layer order differs); rebuild the model in float32 and copy its weights"
            )
        _TWINS[model] = twin
        sync = True
    if sync:
        _copier(twin, model)()
    return twin


_COPIERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _copier(twin, model):
    """One compiled call that copies every weight of ``model`` into ``twin`` (a Python
    loop of assigns took 9 ms per CAM call on the paper's GAP model)."""
    fn = _COPIERS.get(twin)
    if fn is None:
        pairs = list(zip(twin.weights, model.weights))

        @tf.function
        def fn():
            for t, w in pairs:
                t.assign(tf.cast(w.value, t.dtype))

        _COPIERS[twin] = fn
    return fn
