r"""Stage-parallel DistProp: every block's term on its own devices, all at once.

Given the prototypes ``P_l = (mu_l, rho_l)`` DistProp's Lagrangian is a sum of per-block
terms (splits ``0..K-1``, blocks ``0..K``; block 0 reads the data, block ``K`` the loss):

.. math::
  L = T_0(W_0, \lambda_0, P_0;\ \text{batch})
    + \sum_{l=1}^{K-1} T_l(W_l, \lambda_l, P_{l-1}, P_l)
    + T_K(W_K, P_{K-1})

and the noise is a constant (or a pure function of the seed, the step and the split).
The gradient of ``W_l`` and ``lambda_l`` needs term ``l`` alone, that of ``P_l`` the
terms ``l`` (as target) and ``l + 1`` (as input). So no term waits for another: each
block's weights, multipliers and the prototypes it produces live on one position of the
``stage`` mesh axis, and every device evaluates its blocks' terms concurrently. A
prototype ``P`` at a stage boundary is held twice: by the stage that produces it (the
target of its block) and, as a copy, by the next stage (its blocks' input). The two
start equal and get the same gradient, the sum of the two partial gradients, so the
solver moves them alike. Nothing crosses stages in the forward pass; after the backward
pass neighbouring stages exchange their partial gradients of ``P``: ``2 x C x H``
numbers each way per gradient evaluation, whatever the batch size, one collective on two
stages (a swap), two on more (to the next stage, to the previous one). Extragradient
evaluates two gradients per iteration, past-extragradient one; one more collective, a
``psum`` of the reported scalars, completes the iteration. (Sending ``P`` forward and its
cotangent back instead costs two collectives per evaluation, the second after the next
stage's backward pass: measured, 0.91x the sequential iteration against 0.43-0.61x, see
BUILD.md.) The copies' updates are compiled apart from the owners' and may round
differently: they agree to float32 rounding (tested), as the whole iteration agrees with
the sequential one. The data batch is sharded over ``data`` and read by block 0 alone
(its gradient is averaged over ``data`` as in data parallelism); the blocks after it see
only samples.

The gradient is one ``jax.shard_map`` over the mesh (a ``custom_vjp`` ties each boundary
prototype to its copy and exchanges their partial gradients with ``ppermute``;
``lax.cond`` on the stage index runs the first and last blocks on their owners), inside
the jitted, seed-``vmap``ped train step of ``train.py``; the solver's update is
elementwise, so it runs where each leaf lives without communication. The result is the
sequential DistProp iteration (:mod:`distprop`) up to float32 rounding (tested).

``train.build_experiment`` uses this module when ``config.mesh.stage > 1``, or on any
mesh when ``config.distprop.stage_layout`` names a layout (``"auto"``, the default, runs
the sequential code on one stage). Two layouts of the parameters (``"auto"`` picks
``"stacked"`` when it applies):

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

Not supported here (a ``ConfigError`` names the key): per-example multipliers
(``distprop.multipliers`` other than ``"class"``) and ``distprop.real_inputs =
"forward"`` (a sequential forward pass through every block). ``grad_clip`` (the MNIST
default's) clips by the sequential parameters' norm: :func:`norm_weights` counts each
boundary prototype once, not its copy.

Example (one device: one stage, the stacked layout):
  >>> import jax
  >>> from configs import deep_mlp_distprop
  >>> from lagrangian_jax import networks
  >>> from lagrangian_jax.methods import distprop
  >>> config = deep_mlp_distprop.get_config(); config.network.depth = 4
  >>> net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
  >>> mesh = jax.make_mesh((1, 1), ("data", "stage"))
  >>> method = make(config, net, distprop.make(config, net, 100), mesh)
  >>> params, constants = method.init(jax.random.key(0), None)
  >>> params["primal"]["weights"]["inner"]["Dense_0"]["kernel"].shape  # 3 inner blocks
  (3, 128, 128)
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lagrangian_jax import errors
from lagrangian_jax import formulations
from lagrangian_jax import networks
from lagrangian_jax.methods import base
from lagrangian_jax.methods import distprop

PyTree = Any
LAYOUTS = ("auto", "stacked", "slots")
STAGE = "stage"
DATA = "data"


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
    kind in LAYOUTS, "distprop.stage_layout", f"must be one of {list(LAYOUTS)}, got {kind!r}"
  )
  k = len(net.state_shapes)
  if kind == "auto":
    kind = "stacked" if _uniform_inner(net) else "slots"
  if kind == "stacked":
    errors.require(
      _uniform_inner(net),
      "distprop.stage_layout",
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
      "distprop.stage_layout='slots'",
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


def _split_tables(layout: Layout, per_split, copies: bool = False) -> PyTree:
  """A tuple with one entry per split ``l = 0..K-1`` (owned by block ``l``).

  ``copies``: also place each prototype that crosses a stage boundary on the stage that
  reads it (see :func:`make`): stacked, ``"received"`` entry ``s`` holds the input of
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


def _split_tables_back(layout: Layout, tree) -> tuple:
  k = layout.num_splits
  if layout.kind == "stacked":
    return (_unslot(tree["first"], 0), *_unstack(tree["inner"], layout.pad, k - 1))
  return tuple(_unslot(x, layout.owner[l]) for l, x in enumerate(tree))


def _block_inputs(layout: Layout, per_block) -> PyTree:
  """A tuple with one entry per block ``l = 1..K`` (its input noise / mixture)."""
  s, o, k = layout.stages, layout.owner, layout.num_splits
  if layout.kind == "stacked":
    return {"inner": _stack(per_block[:-1], layout.pad), "last": _slot(per_block[-1], s - 1, s)}
  return tuple(_slot(x, o[l], s) for l, x in zip(range(1, k + 1), per_block))


def _block_inputs_back(layout: Layout, tree) -> tuple:
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
        "prototypes": _split_tables(
          layout, params["primal"]["aux"]["prototypes"], copies=layout.stages > 1
        )
      },
    },
    "dual": {"multipliers": _split_tables(layout, params["dual"]["multipliers"])},
  }


def params_from_layout(layout: Layout, params: PyTree) -> PyTree:
  """The inverse of :func:`params_to_layout`: sequential DistProp's parameter tree."""
  return {
    "primal": {
      "weights": weights_from_layout(layout, params["primal"]["weights"]),
      "aux": {"prototypes": _split_tables_back(layout, params["primal"]["aux"]["prototypes"])},
    },
    "dual": {"multipliers": _split_tables_back(layout, params["dual"]["multipliers"])},
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
    out["noise"] = _block_inputs(layout, constants["noise"])
  if "mix" in constants:
    out["mix"] = _block_inputs(layout, constants["mix"])
  return out


def constants_from_layout(layout: Layout, constants: dict) -> dict:
  out = dict(constants)
  for key in ("noise", "mix"):
    if key in constants:
      out[key] = _block_inputs_back(layout, constants[key])
  return out


def _staged(tree: PyTree) -> PyTree:
  """Stage flags of a constants tree: the fixed noise and mixtures are laid out on stages."""
  return {k: jax.tree.map(lambda _, k=k: k in ("noise", "mix"), v) for k, v in tree.items()}


# ----------------------------------------------------------------------------------
# The method.
# ----------------------------------------------------------------------------------


def make(config, net: networks.SplitNetwork, sequential: base.Method, mesh) -> base.Method:
  """DistProp (``sequential``, from ``distprop.make``) with its blocks on ``mesh``'s
  ``stage`` axis: same iterates, parameters in the :class:`Layout` of the mesh."""
  opts = config.distprop
  stages = int(mesh.shape[STAGE])
  errors.require(
    opts.multipliers == "class",
    "distprop.multipliers",
    f"stage-parallel DistProp (mesh.stage > 1) needs 'class' multipliers, got {opts.multipliers!r}",
  )
  errors.require(
    not networks.has_dropout(net),
    "network.dropout",
    "stage-parallel DistProp does not apply dropout; set it to 0 or mesh.stage=1",
  )
  errors.require(
    opts.get("real_inputs", "none") == "none",
    "distprop.real_inputs",
    "stage-parallel DistProp cannot run 'forward' (a sequential pass through every block)",
  )
  layout = make_layout(net, stages, opts.get("stage_layout", "auto"))
  k, owner = layout.num_splits, layout.owner
  num_classes, samples = net.num_classes, int(opts.samples_per_class)
  floor, margin, shrinkage = float(opts.sigma_floor), float(opts.margin), opts.shrinkage
  augmentation = float(opts.augmentation)
  num_mixed = int(round(float(opts.get("mix_fraction", 0.0)) * samples))
  own_targets = opts.get("mix_targets", "own") == "own"
  sample_labels = jnp.tile(jnp.arange(num_classes), samples)
  per_step = opts.noise == "per_step"

  flat, mixed = distprop.flat, distprop.mixed

  def sigma(p):
    return distprop.scale(p, floor)

  def apply(l, w, h):
    return net.segments[l].apply({"params": w}, h)

  def term(value, g, rows):
    if augmentation > 0:
      return formulations.augmented_lagrangian(
        value, [g], [rows], penalty=augmentation, reduction="batch_mean"
      )
    return formulations.lagrangian(value, [g], [rows], reduction="batch_mean")

  def inputs(p_in, eps, mix):
    """Block samples from the Gaussians of its input split (``(S*C, *H)`` rows)."""
    if mix is None:
      return flat(p_in["mu"][None] + eps * sigma(p_in)[None])
    t, partner = mix
    return mixed(p_in["mu"], t, partner) + flat(eps) * mixed(sigma(p_in), t, partner)

  def inner_term(l, w, p_in, p_out, lam, eps, mix):
    """Term ``T_l`` of an inner block and its mean absolute defect."""
    out = apply(l, w, inputs(p_in, eps, mix))
    if mix is None:
      mu, sig, rows = (p_out["mu"][sample_labels], sigma(p_out)[sample_labels], lam[sample_labels])
    else:
      t, partner = mix
      tt = jnp.zeros_like(t) if own_targets else t
      mu, sig = mixed(p_out["mu"], tt, partner), mixed(sigma(p_out), tt, partner)
      rows = mixed(lam, tt, partner)
    g = formulations.epsilon_insensitive((out - mu) / sig, margin, shrinkage)
    return term(0.0, g, rows), formulations.mean_abs_defect(g)

  def first_term(w, p0, lam0, images, labels):
    h0 = apply(0, w, images)
    z0 = (h0 - p0["mu"][labels]) / sigma(p0)[labels]
    g = formulations.epsilon_insensitive(z0, margin, shrinkage)
    return term(0.0, g, lam0[labels]), formulations.mean_abs_defect(g)

  def last_term(w, p_in, eps, mix):
    logits = apply(k, w, inputs(p_in, eps, mix)).astype(jnp.float32)
    if mix is None:
      return base.cross_entropy(logits, sample_labels)
    t, partner = mix
    targets = mixed(jnp.eye(num_classes, dtype=jnp.float32), 0 * t if own_targets else t, partner)
    return jnp.mean(optax.softmax_cross_entropy(logits, targets))

  def draws(constants, step):
    """``(eps_of(split), mix_of(block))`` for per-step noise (pure in seed, step, index)."""
    key = jax.random.fold_in(jax.random.wrap_key_data(constants["noise_key"]), step)
    mix_key = jax.random.fold_in(key, distprop.MIX_SALT)

    def eps_of(split, shape=net.state_shapes[0]):  # stacked splits share one shape
      return distprop.noise_draw(key, split, samples, num_classes, shape)

    def mix_of(block):
      return distprop.mix_draw(mix_key, block, samples, num_classes, num_mixed)

    return eps_of, mix_of

  def varying(tree, axes):
    """``tree`` typed as varying over ``axes`` (both branches of a ``cond`` must be)."""

    def cast(x):
      aval = jax.typeof(x)
      vma = aval.vma if hasattr(aval, "vma") else aval.manual_axis_type.varying
      missing = tuple(a for a in axes if a not in vma)
      return jax.lax.pcast(x, missing, to="varying") if missing else x

    return jax.tree.map(cast, tree)

  def cond_on(stage, fn, like, axes=(STAGE,)):
    """``fn()`` on the devices of ``stage``, zeros (of ``like``) elsewhere; the result
    varies over ``axes``."""
    return jax.lax.cond(
      jax.lax.axis_index(STAGE) == stage,
      lambda: varying(fn(), axes),
      lambda: varying(jax.tree.map(jnp.zeros_like, like), axes),
    )

  scalar = jnp.zeros((), jnp.float32)

  def message(p):  # one split's prototypes as one array (one message)
    return jnp.stack([p["mu"], p["rho"]])

  def unmessage(x):
    return {"mu": x[0], "rho": x[1]}

  def swap(x, a, b):  # stages a and b exchange x; the others receive zeros
    return jax.lax.ppermute(x, STAGE, [(a, b), (b, a)])

  # The ties between a boundary prototype and its copy (module docstring): identity
  # forward; backward, each side adds the other's partial gradient to its own (IEEE
  # addition commutes, so both sums are the same bits).
  @jax.custom_vjp
  def tie(own, copy):
    return own, copy

  def tie_fwd(own, copy):
    return (own, copy), None

  def tie_bwd(_, cts):
    # the barrier materialises both partial gradients: the value each stage adds is then
    # the value it sends (fused into the sum, a partial could round differently, e.g.
    # with a contracted multiply-add)
    ct_own, ct_copy = jax.lax.optimization_barrier(tuple(message(c) for c in cts))
    if stages == 2:  # one swap: stage 0 sends its own's gradient, stage 1 its copy's
      first = jax.lax.axis_index(STAGE) == 0
      r = swap(jnp.where(first, ct_own, ct_copy), 0, 1)
      from_next, from_prev = (jnp.where(first == f, r, 0.0) for f in (True, False))
    else:
      from_next = jax.lax.ppermute(ct_copy, STAGE, [(i + 1, i) for i in range(stages - 1)])
      from_prev = jax.lax.ppermute(ct_own, STAGE, [(i, i + 1) for i in range(stages - 1)])
    return unmessage(ct_own + from_next), unmessage(ct_copy + from_prev)

  tie.defvjp(tie_fwd, tie_bwd)

  @functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
  def tie_pair(x, a, b):
    """Slots: ``x`` is the boundary split's entry, owned by stage ``a``, copy on ``b``."""
    del a, b
    return x

  def tie_pair_fwd(x, a, b):
    del a, b
    return x, None

  def tie_pair_bwd(a, b, _, ct):
    ct = jax.lax.optimization_barrier(message(ct))  # as in ``tie_bwd``
    return (unmessage(ct + swap(ct, a, b)),)

  tie_pair.defvjp(tie_pair_fwd, tie_pair_bwd)

  def data_mean(tree):  # block 0's batch mean over the data axis
    return jax.lax.pmean(tree, DATA)

  def totals(value, loss, defects):
    """One psum over stages of the objective, the loss and each split's defect."""
    out = jax.lax.psum(jnp.concatenate([jnp.stack([value, loss]), defects]), STAGE)
    return out[0], {"loss": out[1], "defect": out[2:]}

  def local_stacked(params, constants, images, labels, step):
    s = jax.lax.axis_index(STAGE)
    w = params["primal"]["weights"]
    protos = params["primal"]["aux"]["prototypes"]
    lams = params["dual"]["multipliers"]
    m, d = layout.per_stage, layout.pad
    first = jax.tree.map(lambda x: x[0], (w["first"], protos["first"], lams["first"]))
    # inner blocks: inputs are the previous entry's prototypes; entry 0 reads this
    # stage's copy of the previous stage's last one; stage 0 feeds P_0 to its unused
    # entries and first block
    p_inner = protos["inner"]
    p0 = first[1]
    if stages > 1:  # every use of the boundary prototypes goes through the tie
      own = jax.tree.map(lambda x: x[m - 1], p_inner)
      if d == m:  # stage 0 has no used entry: its boundary prototype is P_0
        own = jax.tree.map(lambda x, x0: jnp.where(s == 0, x0, x), own, p0)
      own, received = tie(own, jax.tree.map(lambda x: x[0], protos["received"]))
      p_inner = jax.tree.map(lambda x, o: x.at[m - 1].set(o), p_inner, own)
      if d == m:
        p0 = jax.tree.map(lambda x0, o: jnp.where(s == 0, o, x0), p0, own)
    else:
      received = jax.tree.map(lambda x: x[0], p_inner)  # stage 0: never read
    t0, d0 = cond_on(  # block 0: the only one that reads the batch
      0,
      lambda: first_term(first[0], p0, first[2], images, labels),
      (scalar, scalar),
      (DATA, STAGE),
    )
    t0, d0 = data_mean((t0, d0))
    j = jnp.arange(m)
    from_p0 = (s == 0) & (j <= d)

    def previous(x, x0, r):
      prev = jnp.concatenate([r[None], x[:-1]])
      return jnp.where(from_p0.reshape((m,) + (1,) * (x.ndim - 1)), x0[None], prev)

    p_in = jax.tree.map(previous, p_inner, p0, received)
    block = s * m + j - d + 1  # each entry's block index (< 1: unused)
    if per_step:
      eps_of, mix_of = draws(constants, step)

    def last_inputs():  # drawn inside the last stage's branch: no other stage pays for it
      if per_step:
        return eps_of(k - 1), (mix_of(k) if num_mixed else None)
      mix = jax.tree.map(lambda x: x[0], constants["mix"]["last"]) if num_mixed else None
      return constants["noise"]["last"][0], mix

    # every stage computes all m entries (stage 0's d unused ones too, masked below):
    # under a lax.cond that skipped them, XLA copied every residual of the vmapped
    # blocks out of the branch, which cost more than the skipped entries
    if per_step:
      eps = jax.vmap(eps_of)(jnp.maximum(block - 1, 0))
      mix = jax.vmap(mix_of)(jnp.maximum(block, 1)) if num_mixed else None
    else:
      eps = constants["noise"]["inner"]
      mix = constants["mix"]["inner"] if num_mixed else None
    terms, defects = jax.vmap(
      lambda *a: inner_term(1, *a), in_axes=(0, 0, 0, 0, 0, None if mix is None else 0)
    )(w["inner"], p_in, p_inner, lams["inner"], eps, mix)
    used = block >= 1
    t_inner = jnp.sum(jnp.where(used, terms, 0.0))
    defects = jnp.where(used, defects, 0.0)

    last_in = jax.tree.map(lambda x: x[m - 1], p_inner)
    w_last = jax.tree.map(lambda x: x[0], w["last"])
    loss = cond_on(stages - 1, lambda: last_term(w_last, last_in, *last_inputs()), scalar)
    # each split's defect at its index (entry j of stage s is split block[j]), then one
    # psum of every scalar the step reports
    split_defects = jnp.zeros((k,), jnp.float32).at[jnp.maximum(block, 0)].add(defects)
    split_defects = split_defects.at[0].add(d0)
    return totals(t0 + t_inner + loss, loss, split_defects)

  def local_slots(params, constants, images, labels, step):
    w = jax.tree.map(lambda x: x[0], params["primal"]["weights"])
    protos = jax.tree.map(lambda x: x[0], params["primal"]["aux"]["prototypes"])
    lams = jax.tree.map(lambda x: x[0], params["dual"]["multipliers"])
    protos = list(protos)
    for l in range(1, k + 1):  # every use of a boundary split goes through its tie
      if owner[l] != owner[l - 1]:
        protos[l - 1] = tie_pair(protos[l - 1], owner[l - 1], owner[l])
    if per_step:
      eps_of, mix_of = draws(constants, step)
    else:
      noise = jax.tree.map(lambda x: x[0], constants["noise"])
      mixes = jax.tree.map(lambda x: x[0], constants["mix"]) if num_mixed else None
    t0, d0 = cond_on(
      owner[0],
      lambda: first_term(w[0], protos[0], lams[0], images, labels),
      (scalar, scalar),
      (DATA, STAGE),
    )
    t0, d0 = data_mean((t0, d0))
    total, defects, loss = t0, [d0], scalar
    for l in range(1, k + 1):
      p_in = protos[l - 1]  # on a boundary, the consumer's copy

      def block_inputs(l=l):  # drawn inside the owner's branch: no other stage pays for it
        eps = eps_of(l - 1, net.state_shapes[l - 1]) if per_step else noise[l - 1]
        mix = None
        if num_mixed:
          mix = mix_of(l) if per_step else mixes[l - 1]
        return eps, mix

      if l < k:
        t, dl = cond_on(
          owner[l],
          lambda l=l, p_in=p_in, f=block_inputs: inner_term(
            l, w[l], p_in, protos[l], lams[l], *f()
          ),
          (scalar, scalar),
        )
        total, defects = total + t, defects + [dl]
      else:
        loss = cond_on(
          owner[k], lambda p_in=p_in, f=block_inputs: last_term(w[k], p_in, *f()), scalar
        )
    return totals(total + loss, loss, jnp.stack(defects))

  def specs(tree, flags=None):
    flags = jax.tree.map(lambda _: True, tree) if flags is None else flags
    return jax.tree.map(lambda f: jax.P(STAGE) if f else jax.P(), flags)

  def objective(params, constants, batch):
    local = local_stacked if layout.kind == "stacked" else local_slots
    out_metrics = {"loss": jax.P(), "defect": jax.P()}
    fn = jax.shard_map(
      local,
      mesh=mesh,
      in_specs=(
        specs(params),
        specs(constants, _staged(constants)),
        jax.P(DATA),
        jax.P(DATA),
        jax.P(),
      ),
      out_specs=(jax.P(), out_metrics),
    )
    return fn(params, constants, batch.images, batch.labels, jnp.asarray(batch.step))

  def init(rng, map_train):
    params, constants = sequential.init(rng, map_train)
    return params_to_layout(layout, params), constants_to_layout(layout, constants)

  def defects(params, constants, batch):  # evaluation: the sequential defects
    return sequential.defects(
      params_from_layout(layout, params), constants_from_layout(layout, constants), batch
    )

  def primal_labels(primal):
    def label(path, _):
      keys = [getattr(p, "key", None) for p in path]
      if keys[0] == "weights":
        return "weights"
      return "sigma" if keys[-1] == "rho" else "aux"

    return jax.tree_util.tree_map_with_path(label, primal)

  return sequential._replace(
    init=init,
    objective=objective,
    defects=defects,
    primal_labels=primal_labels,
    placement=lambda params, constants: base.Placement(
      jax.tree.map(lambda _: base.STAGES, params),
      jax.tree.map(lambda f: base.STAGES if f else base.REPLICATED, _staged(constants)),
    ),
    network_weights=lambda weights: weights_from_layout(layout, weights),
    # a boundary prototype is held twice: its copy must not count in grad_clip's norm
    norm_weights=lambda params: norm_weights(layout, params),
  )
