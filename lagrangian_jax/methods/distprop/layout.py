"""Where stage-parallel DistProp's blocks live: the layouts of its parameters.

A :class:`Layout` places blocks ``0..K`` on ``S`` stages (``owner[l]``); the parameters
(per-segment weights, per-split prototypes and multipliers) and the fixed draws
(per-block noise and mixtures) are laid out on a leading axis sharded over ``stage``,
and back (``*_to_layout`` / ``*_from_layout``, exact inverses). The two layouts, and
``config.distprop.block_layout``:

* ``"stacked"`` (networks whose inner blocks ``1..K-1`` are one module on one state
  shape: the deep MLP, any repeated block). The inner blocks' weights, multipliers and
  output prototypes are stacked along a leading axis of ``S * m`` entries, ``m =
  ceil((K-1)/S)`` per stage, sharded over ``stage``; their terms are one ``jax.vmap``.
  The ``d = S m - (K - 1)`` unused entries (zeros; computed with the others and masked,
  so they get no gradient and never move: skipping them under a ``lax.cond`` made XLA
  copy every residual of the vmapped blocks out of the branch, which cost more than the
  entries) are the first ones of stage 0, which also runs block 0, the only block that
  reads the batch: this needs ``K - 1 >= (S - 1) m``. Block 0 and block ``K`` are
  *slots*; the copies of the boundary prototypes are one more slot, ``"received"``.
* ``"slots"`` (any network, e.g. the MNIST and CIFAR networks, AlexNet). Every block is
  a slot: an array with a leading axis of ``S`` entries sharded over ``stage``, of which
  only its owner's entry is used (the others stay zero; a boundary split's copy is its
  slot's entry on the next stage). Owners are contiguous,
  ``owner(l) = floor(l S / (K + 1))``, so ``K + 1 >= S`` and every stage owns a block.
  The cost is memory, not time: every stage allocates (but never computes with) every
  slot block's weights and optimizer state, ``S x`` the parameter memory of the slot
  blocks; the alternative of one jitted program per stage (inputs committed to each
  stage's devices, prototypes moved with ``jax.device_put``) saves that memory but
  leaves the single SPMD program (and the solver step around it) behind.
* ``"auto"`` (the default): the sequential code on one stage (measured faster there
  than ``"stacked"``, though the stacked step has a fifth of its ops: the vmapped
  blocks' batched dots cost more than the separate ones on CPU, BUILD.md), ``"stacked"``
  when it applies on several, else ``"slots"``; ``"sequential"``: the sequential code,
  one stage only. ``"stacked"`` or ``"slots"`` run the stage-parallel code on one stage
  too (its tests compare it with the sequential run). :func:`layout_for` says which.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lagrangian_jax import errors
from lagrangian_jax import networks
from lagrangian_jax.methods.distprop import options

PyTree = Any
LAYOUTS = ("auto", "stacked", "slots")


class Layout(NamedTuple):
  """Where each block lives: ``owner[l]`` is block ``l``'s stage (``l = 0..K``)."""

  kind: str  # "stacked" | "slots"
  stages: int  # S
  num_splits: int  # K
  owner: tuple[int, ...]
  per_stage: int  # stacked: inner entries per stage (m); slots: 0
  pad: int  # stacked: unused entries at the start of stage 0 (d); slots: 0


def _uniform_inner(net: networks.SplitNetwork) -> bool:
  """The inner blocks are one module on one state shape (so they stack)."""
  k = len(net.state_shapes)
  inner = net.segments[1:k]
  return (
    k >= 2
    and all(repr(s) == repr(inner[0]) for s in inner)
    and all(tuple(s) == tuple(net.state_shapes[0]) for s in net.state_shapes)
  )


def make_layout(net: networks.SplitNetwork, stages: int, kind: str = "auto") -> Layout:
  """The layout of ``net``'s blocks on ``stages`` stages (module docstring).

  Example:
    >>> net = networks.build_network("mlp", depth=8, split="every")
    >>> make_layout(net, 4)
    Layout(kind='stacked', stages=4, num_splits=8, owner=(0, 0, 1, 1, 2, 2, 3, 3, 3), per_stage=2, pad=1)
  """
  errors.require(
    kind in LAYOUTS, "distprop.block_layout", f"must be one of {list(LAYOUTS)}, got {kind!r}"
  )
  k = len(net.state_shapes)
  if kind == "auto":
    kind = "stacked" if _uniform_inner(net) else "slots"
  if kind == "stacked":
    errors.require(
      _uniform_inner(net),
      "distprop.block_layout",
      "'stacked' needs at least two splits with identical inner blocks (the deep MLP); use 'slots'",
    )
    n = k - 1
    m = math.ceil(n / stages)
    d = stages * m - n
    errors.require(
      d <= m,
      "mesh.stage",
      f"{stages} stages for {n} stacked inner blocks: {m} per stage leaves {d} unused "
      f"entries, more than one stage's {m}; use at most {n // m + 1} stages or "
      "distprop.block_layout='slots'",
    )
    owner = (0,) + tuple((d + l - 1) // m for l in range(1, k)) + (stages - 1,)
    return Layout("stacked", stages, k, owner, m, d)
  errors.require(
    k + 1 >= stages,
    "mesh.stage",
    f"{stages} stages for a network of {k + 1} blocks: every stage must own a block",
  )
  owner = tuple(l * stages // (k + 1) for l in range(k + 1))
  return Layout("slots", stages, k, owner, 0, 0)


# ----------------------------------------------------------------------------------
# The layout of parameters and constants (one seed), and back.
# ----------------------------------------------------------------------------------


def _slot(tree: PyTree, owner: int, stages: int) -> PyTree:
  return jax.tree.map(lambda x: jnp.zeros((stages,) + x.shape, x.dtype).at[owner].set(x), tree)


def _unslot(tree: PyTree, owner: int) -> PyTree:
  return jax.tree.map(lambda x: x[owner], tree)


def _stack(trees, pad: int) -> PyTree:
  def leaf(*xs):
    x = jnp.stack(xs)
    return jnp.concatenate([jnp.zeros((pad,) + x.shape[1:], x.dtype), x])

  return jax.tree.map(leaf, *trees)


def _unstack(tree: PyTree, pad: int, n: int) -> list:
  return [jax.tree.map(lambda x, i=i: x[pad + i], tree) for i in range(n)]


def _per_split(layout: Layout, per_split, copies: bool = False) -> PyTree:
  """A tuple with one entry per split ``l = 0..K-1`` (owned by block ``l``).

  ``copies``: also place each prototype that crosses a stage boundary on the stage that
  reads it (``stage_parallel.py``): stacked, ``"received"`` entry ``s`` holds the input of
  stage ``s``'s first entry; slots, the consumer's entry of the split's slot."""
  s, o = layout.stages, layout.owner
  if layout.kind == "stacked":
    out = {"first": _slot(per_split[0], 0, s), "inner": _stack(per_split[1:], layout.pad)}
    if copies:  # stage t >= 1 reads split t m - d (entry 0's input); stage 0 reads P_0
      m, d = layout.per_stage, layout.pad
      feeds = [per_split[max(t * m - d, 0)] for t in range(s)]
      out["received"] = jax.tree.map(lambda *xs: jnp.stack(xs).at[0].set(0), *feeds)
    return out
  slots = []
  for l, x in enumerate(per_split):
    slot = _slot(x, o[l], s)
    if copies and o[l + 1] != o[l]:
      slot = jax.tree.map(lambda a, v, t=o[l + 1]: a.at[t].set(v), slot, x)
    slots.append(slot)
  return tuple(slots)


def _per_split_back(layout: Layout, tree) -> tuple:
  k = layout.num_splits
  if layout.kind == "stacked":
    return (_unslot(tree["first"], 0), *_unstack(tree["inner"], layout.pad, k - 1))
  return tuple(_unslot(x, layout.owner[l]) for l, x in enumerate(tree))


def _per_block(layout: Layout, per_block) -> PyTree:
  """A tuple with one entry per block ``l = 1..K`` (its input noise / mixture)."""
  s, o, k = layout.stages, layout.owner, layout.num_splits
  if layout.kind == "stacked":
    return {"inner": _stack(per_block[:-1], layout.pad), "last": _slot(per_block[-1], s - 1, s)}
  return tuple(_slot(x, o[l], s) for l, x in zip(range(1, k + 1), per_block))


def _per_block_back(layout: Layout, tree) -> tuple:
  k = layout.num_splits
  if layout.kind == "stacked":
    return (*_unstack(tree["inner"], layout.pad, k - 1), _unslot(tree["last"], layout.stages - 1))
  return tuple(_unslot(x, layout.owner[l]) for l, x in zip(range(1, k + 1), tree))


def weights_to_layout(layout: Layout, weights: tuple) -> PyTree:
  s, o, k = layout.stages, layout.owner, layout.num_splits
  if layout.kind == "stacked":
    return {
      "first": _slot(weights[0], 0, s),
      "inner": _stack(weights[1:k], layout.pad),
      "last": _slot(weights[k], s - 1, s),
    }
  return tuple(_slot(w, o[l], s) for l, w in enumerate(weights))


def weights_from_layout(layout: Layout, weights: PyTree) -> tuple:
  """The network's per-segment weights tuple (what ``networks.forward`` takes)."""
  k = layout.num_splits
  if layout.kind == "stacked":
    return (
      _unslot(weights["first"], 0),
      *_unstack(weights["inner"], layout.pad, k - 1),
      _unslot(weights["last"], layout.stages - 1),
    )
  return tuple(_unslot(w, layout.owner[l]) for l, w in enumerate(weights))


def params_to_layout(layout: Layout, params: PyTree) -> PyTree:
  """Sequential DistProp's parameters (per-segment / per-split tuples) in ``layout``."""
  return {
    "primal": {
      "weights": weights_to_layout(layout, params["primal"]["weights"]),
      "aux": {
        "prototypes": _per_split(
          layout, params["primal"]["aux"]["prototypes"], copies=layout.stages > 1
        )
      },
    },
    "dual": {"multipliers": _per_split(layout, params["dual"]["multipliers"])},
  }


def params_from_layout(layout: Layout, params: PyTree) -> PyTree:
  """The inverse of :func:`params_to_layout`: sequential DistProp's parameter tree."""
  return {
    "primal": {
      "weights": weights_from_layout(layout, params["primal"]["weights"]),
      "aux": {"prototypes": _per_split_back(layout, params["primal"]["aux"]["prototypes"])},
    },
    "dual": {"multipliers": _per_split_back(layout, params["dual"]["multipliers"])},
  }


def norm_weights(layout: Layout, params: PyTree) -> PyTree:
  """How many times each entry of ``params`` (in ``layout``) counts in a global norm.

  1 everywhere but at the boundary prototypes' copies (0): the layout's norm is then the
  sequential parameters' norm (unused entries are zeros that never move), so a global
  clip (``grad_clip``) scales the step as the sequential run does.

  Example:
    >>> net = networks.build_network("mlp", depth=4, split="every")
    >>> layout = make_layout(net, 2)
    >>> w = norm_weights(layout, {"primal": {"weights": 0, "aux": {"prototypes": {
    ...     "first": 0, "inner": 0, "received": 0}}}, "dual": 0})
    >>> w["primal"]["aux"]["prototypes"]
    {'first': 1.0, 'inner': 1.0, 'received': 0.0}
  """
  ones = jax.tree.map(lambda _: 1.0, params)
  protos = params["primal"]["aux"]["prototypes"]
  if layout.kind == "stacked":
    weights = {
      k: jax.tree.map(lambda _, k=k: 0.0 if k == "received" else 1.0, v) for k, v in protos.items()
    }
  else:
    o, s = layout.owner, layout.stages

    def slot_weights(l, slot):
      if o[l + 1] == o[l]:
        return jax.tree.map(lambda _: 1.0, slot)
      mask = jnp.ones((s,), jnp.float32).at[o[l + 1]].set(0.0)
      return jax.tree.map(lambda x: mask.reshape((s,) + (1,) * (len(x.shape) - 1)), slot)

    weights = tuple(slot_weights(l, slot) for l, slot in enumerate(protos))
  ones["primal"]["aux"]["prototypes"] = weights
  return ones


def constants_to_layout(layout: Layout, constants: dict) -> dict:
  out = dict(constants)
  if "noise" in constants:  # eps of split l is block l+1's input
    out["noise"] = _per_block(layout, constants["noise"])
  if "mix" in constants:
    out["mix"] = _per_block(layout, constants["mix"])
  return out


def constants_from_layout(layout: Layout, constants: dict) -> dict:
  out = dict(constants)
  for key in ("noise", "mix"):
    if key in constants:
      out[key] = _per_block_back(layout, constants[key])
  return out


def staged_constants(tree: PyTree) -> PyTree:
  """Stage flags of a constants tree: the fixed noise and mixtures are laid out on stages."""
  return {k: jax.tree.map(lambda _, k=k: k in ("noise", "mix"), v) for k, v in tree.items()}


def on_stages(opts: options.Options, stages: int) -> bool:
  """Whether DistProp runs the stage-parallel code on ``stages`` stages
  (``config.distprop.block_layout``, module docstring)."""
  errors.require(
    opts.block_layout != "sequential" or stages == 1,
    "distprop.block_layout",
    f"'sequential' runs on one stage, not mesh.stage={stages}; use 'auto', 'stacked' or 'slots'",
  )
  return stages > 1 or opts.block_layout in ("stacked", "slots")


def layout_for(config, net: networks.SplitNetwork, stages: int) -> Layout | None:
  """The :class:`Layout` of DistProp's parameters on ``stages`` stages; None when the
  sequential code runs (``block_layout`` ``"auto"`` on one stage, or ``"sequential"``).

  Example:
    >>> from configs import deep_mlp_distprop
    >>> config = deep_mlp_distprop.get_config(); config.network.depth = 4
    >>> net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
    >>> layout_for(config, net, 1) is None, layout_for(config, net, 2).owner  # 3 splits
    (True, (0, 0, 1, 1))
  """
  opts = options.parse(config)
  if not on_stages(opts, stages):
    return None
  return make_layout(net, stages, opts.block_layout)
