r"""Stage-parallel DistProp: every block's term on its own devices, all at once.

Given the prototypes ``P_l = (mu_l, rho_l)`` DistProp's Lagrangian is a sum of per-block
terms (splits ``0..K-1``, blocks ``0..K``; block 0 reads the data, block ``K`` the loss;
each term is written once, in ``terms.py``):

.. math::
  L = T_0(W_0, \lambda_0, P_0;\ \text{batch})
    + \sum_{l=1}^{K-1} T_l(W_l, \lambda_l, P_{l-1}, P_l)
    + T_K(W_K, P_{K-1})

and the noise is a constant (or a pure function of the seed, the step and the split).
The gradient of ``W_l`` and ``lambda_l`` needs term ``l`` alone, that of ``P_l`` the
terms ``l`` (as target) and ``l + 1`` (as input). So no term waits for another: each
block's weights, multipliers and the prototypes it produces live on one position of the
``stage`` mesh axis (``layout.py``), and every device evaluates its blocks' terms
concurrently. A prototype ``P`` at a stage boundary is held twice: by the stage that
produces it (the target of its block) and, as a copy, by the next stage (its blocks'
input). The two start equal and get the same gradient, the sum of the two partial
gradients, so the solver moves them alike. Nothing crosses stages in the forward pass;
after the backward pass neighbouring stages exchange their partial gradients of ``P``:
``2 x C x H`` numbers each way per gradient evaluation, whatever the batch size, one
collective on two stages (a swap), two on more (to the next stage, to the previous one).
Extragradient evaluates two gradients per iteration, past-extragradient one; one more
collective, a ``psum`` of the reported scalars, completes the iteration. (Sending ``P``
forward and its cotangent back instead costs two collectives per evaluation, the second
after the next stage's backward pass: measured, 0.91x the sequential iteration against
0.43-0.61x, see BUILD.md.) The copies' updates are compiled apart from the owners' and
may round differently: they agree to float32 rounding (tested), as the whole iteration
agrees with the sequential one. The data batch is sharded over ``data`` and read by
block 0 alone (its gradient is averaged over ``data`` as in data parallelism); the blocks
after it see only samples, and those are split over ``data`` too: each data device draws
(or reads) every class's noise and runs its own ``S / data`` samples of it through its
blocks, and the terms' means over rows are averaged over ``data`` (:func:`row_shards`;
when ``data`` does not divide ``S``, every data device runs all of them).

The gradient is one ``jax.shard_map`` over the mesh (a ``custom_vjp`` ties each boundary
prototype to its copy and exchanges their partial gradients with ``ppermute``;
``lax.cond`` on the stage index runs the first and last blocks on their owners), inside
the jitted, seed-``vmap``ped train step of ``step.py``; the solver's update is
elementwise, so it runs where each leaf lives without communication. The result is the
sequential DistProp iteration (``sequential.py``) up to float32 rounding (tested).

``methods.make_method`` uses this module (:func:`for_mesh`) when ``config.mesh.stage >
1``, or on any mesh when ``config.distprop.block_layout`` is ``"stacked"`` or
``"slots"`` (``layout.py``).

Not supported here (a ``ConfigError`` names the key): per-example multipliers
(``distprop.multipliers`` other than ``"class"``) and ``distprop.real_inputs``
``"forward"`` or ``"local"`` (a sequential forward pass through every block). ``grad_clip`` (the MNIST
default's) clips by the sequential parameters' norm: ``layout.norm_weights`` counts each
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
  >>> params["primal"]["weights"]["inner"]["Dense_0"]["kernel"].shape  # 2 inner blocks
  (2, 128, 128)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lagrangian_jax import errors
from lagrangian_jax import formulations
from lagrangian_jax import networks
from lagrangian_jax.methods import base
from lagrangian_jax.methods.distprop import layout as layout_lib
from lagrangian_jax.methods.distprop import options
from lagrangian_jax.methods.distprop import sequential as sequential_lib
from lagrangian_jax.methods.distprop import terms

PyTree = Any
STAGE = "stage"
DATA = "data"


class Stages(NamedTuple):
  """What the per-stage objective reads besides its arguments."""

  opts: options.Options
  net: networks.SplitNetwork
  layout: layout_lib.Layout
  sample_labels: jax.Array  # the class of each flat sample row a device runs
  data: int  # the data shards of the samples (1: every data device runs them all)


def for_mesh(config, net: networks.SplitNetwork, sequential: base.Method, mesh) -> base.Method:
  """DistProp on ``mesh`` (None: one device): ``sequential`` with its synthetic rows split
  over ``data`` (``sequential.on_data``), or its blocks on the ``stage`` axis when
  ``config.distprop.block_layout`` says so (``layout.on_stages``)."""
  opts = options.parse(config)
  stages = 1 if mesh is None else int(mesh.shape[STAGE])
  if not layout_lib.on_stages(opts, stages):
    return sequential_lib.on_data(config, net, sequential, mesh)
  errors.require(
    mesh is not None,
    "distprop.block_layout",
    f"{opts.block_layout!r} runs the stage-parallel code, which needs a (data, stage) mesh",
  )
  return make(config, net, sequential, mesh)


def make(config, net: networks.SplitNetwork, sequential: base.Method, mesh) -> base.Method:
  """DistProp (``sequential``, from ``sequential.make``) with its blocks on ``mesh``'s
  ``stage`` axis: same iterates, parameters in the :class:`layout.Layout` of the mesh."""
  opts = options.parse(config)
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
    opts.real_inputs == "none",
    "distprop.real_inputs",
    f"stage-parallel DistProp cannot run {opts.real_inputs!r}: its real chain is a "
    "sequential forward pass of the batch through every block (stage l waits for l - 1)",
  )
  errors.require(
    opts.components == 1,
    "distprop.components",
    f"stage-parallel DistProp runs one Gaussian per class, got {opts.components}",
  )
  layout = layout_lib.make_layout(net, int(mesh.shape[STAGE]), opts.block_layout)
  data = row_shards(opts.samples_per_class, int(mesh.shape[DATA]))
  labels = terms.sample_labels(net.num_classes, opts.samples_per_class // data)
  ctx = Stages(opts, net, layout, labels, data)
  return sequential._replace(
    init=functools.partial(_init, layout, sequential),
    objective=functools.partial(_objective, ctx, mesh),
    defects=functools.partial(_defects, layout, sequential),
    primal_labels=_primal_labels,
    placement=_placement,
    network_weights=functools.partial(layout_lib.weights_from_layout, layout),
    # a boundary prototype is held twice: its copy must not count in grad_clip's norm
    norm_weights=functools.partial(layout_lib.norm_weights, layout),
    value_and_grad=None,  # the sequential code's block-by-block gradient: not this layout
  )


# ----------------------------------------------------------------------------------
# The samples on the data axis
# ----------------------------------------------------------------------------------


def row_shards(samples: int, data: int) -> int:
  """Over how many data devices the ``S`` samples of each class are split: all ``data``
  when they divide ``S``, else 1 (every data device runs all ``S x C`` rows, as the
  blocks after block 0 did before the split).

  >>> row_shards(32, 4), row_shards(1, 8)
  (4, 1)
  """
  return data if samples % data == 0 else 1


def _own_rows(ctx: Stages, tree, axis: int):
  """This data device's share of the sample axis (``axis``: ``S``) of the draws in
  ``tree``: ``S / data`` consecutive samples of every class. Each block's terms are
  means over rows, so the mean over ``data`` of the shares' (:func:`_over_data`) is the
  whole term, and the gradients of the weights (invariant over ``data``) are summed over
  the shares by the transpose of their implicit ``pvary``."""
  if ctx.data == 1:
    return tree
  n = ctx.opts.samples_per_class // ctx.data
  start = jax.lax.axis_index(DATA) * n
  return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, n, axis), tree)


def _over_data(ctx: Stages, tree):
  """The mean over the data devices of their shares' means (:func:`_own_rows`)."""
  return tree if ctx.data == 1 else jax.lax.pmean(tree, DATA)


def _sample_axes(ctx: Stages):
  """The axes a term on the samples varies over."""
  return (DATA, STAGE) if ctx.data > 1 else (STAGE,)


# ----------------------------------------------------------------------------------
# The terms (terms.py) as each stage evaluates them
# ----------------------------------------------------------------------------------


def _apply(net: networks.SplitNetwork, l: int, w, h):
  return net.segments[l].apply({"params": w}, h)


def _term(opts: options.Options, g, rows):
  """One block's share of the Lagrangian: ``<rows, g>`` (and ``c/2 |g|^2``)."""
  return terms.lagrangian(opts, 0.0, [g], [rows])


def _first_term(ctx: Stages, w, p0, lam0, images, labels):
  """``T_0``, block 0 on the batch, and its mean absolute defect."""
  g = terms.first_constraint(ctx.opts, _apply(ctx.net, 0, w, images), p0, labels)
  rows = terms.first_rows(ctx.opts, lam0, labels)
  return _term(ctx.opts, g, rows), formulations.mean_abs_defect(g)


def _inner_term(ctx: Stages, l: int, w, p_in, p_out, lam, eps, mix):
  """``T_l`` of an inner block on its input samples, and its mean absolute defect."""
  out = _apply(ctx.net, l, w, terms.block_input(ctx.opts, p_in, eps, mix))
  g = terms.block_constraint(ctx.opts, out, p_out, ctx.sample_labels, mix)
  rows = terms.block_rows(ctx.opts, lam, ctx.sample_labels, mix)
  return _term(ctx.opts, g, rows), formulations.mean_abs_defect(g)


def _last_term(ctx: Stages, w, p_in, eps, mix):
  """``T_K``: the last block's loss on its input samples."""
  k = ctx.layout.num_splits
  logits = _apply(ctx.net, k, w, terms.block_input(ctx.opts, p_in, eps, mix))
  return terms.last_loss(ctx.opts, logits, ctx.sample_labels, mix)


def _step_keys(ctx: Stages, constants, step):
  """``noise="per_step"``: the noise and mixture keys of iteration ``step`` and its noise
  pool (``terms.noise_pool``: None for draws per split); None for fixed draws
  (constants)."""
  if ctx.opts.noise != "per_step":
    return None
  key = terms.step_key(constants, step)
  return key, terms.mixture_key(key), terms.noise_pool(ctx.opts, ctx.net, key)


def _eps(ctx: Stages, keys, split, shape=None):
  """Split ``split``'s per-step noise (stacked splits share the first one's shape)."""
  shape = ctx.net.state_shapes[0] if shape is None else shape
  opts = ctx.opts
  if keys[2] is not None:  # noise_draws="pooled": every stage draws the step's pool
    return terms.pooled_draw(keys[2], keys[0], split, shape, opts.noise_rng)
  return terms.noise_draw(
    keys[0], split, opts.samples_per_class, ctx.net.num_classes, shape, opts.noise_rng
  )


def _mix(ctx: Stages, keys, block):
  """Block ``block``'s per-step mixture."""
  opts = ctx.opts
  return terms.mix_draw(
    keys[1], block, opts.samples_per_class, ctx.net.num_classes, opts.num_mixed, opts.noise_rng
  )


# ----------------------------------------------------------------------------------
# Collectives
# ----------------------------------------------------------------------------------


def _varying(tree, axes):
  """``tree`` typed as varying over ``axes`` (both branches of a ``cond`` must be)."""

  def cast(x):
    aval = jax.typeof(x)
    vma = aval.vma if hasattr(aval, "vma") else aval.manual_axis_type.varying
    missing = tuple(a for a in axes if a not in vma)
    return jax.lax.pcast(x, missing, to="varying") if missing else x

  return jax.tree.map(cast, tree)


def _cond_on(stage, fn, like, axes=(STAGE,)):
  """``fn()`` on the devices of ``stage``, zeros (of ``like``) elsewhere; the result
  varies over ``axes``."""
  return jax.lax.cond(
    jax.lax.axis_index(STAGE) == stage,
    lambda: _varying(fn(), axes),
    lambda: _varying(jax.tree.map(jnp.zeros_like, like), axes),
  )


def _scalar():
  return jnp.zeros((), jnp.float32)


def _message(p):  # one split's prototypes as one array (one message)
  return jnp.stack([p["mu"], p["rho"]])


def _unmessage(x):
  return {"mu": x[0], "rho": x[1]}


def _swap(x, a, b):  # stages a and b exchange x; the others receive zeros
  return jax.lax.ppermute(x, STAGE, [(a, b), (b, a)])


# The ties between a boundary prototype and its copy (module docstring): identity
# forward; backward, each side adds the other's partial gradient to its own (IEEE
# addition commutes, so both sums are the same bits).
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _tie(stages, own, copy):
  """Stacked: ``own`` is this stage's last split, ``copy`` its copy of the previous
  stage's; ``stages`` the number of stages."""
  del stages
  return own, copy


def _tie_fwd(stages, own, copy):
  del stages
  return (own, copy), None


def _tie_bwd(stages, _, cts):
  # the barrier materialises both partial gradients: the value each stage adds is then
  # the value it sends (fused into the sum, a partial could round differently, e.g.
  # with a contracted multiply-add)
  ct_own, ct_copy = jax.lax.optimization_barrier(tuple(_message(c) for c in cts))
  if stages == 2:  # one swap: stage 0 sends its own's gradient, stage 1 its copy's
    first = jax.lax.axis_index(STAGE) == 0
    r = _swap(jnp.where(first, ct_own, ct_copy), 0, 1)
    from_next, from_prev = (jnp.where(first == f, r, 0.0) for f in (True, False))
  else:
    from_next = jax.lax.ppermute(ct_copy, STAGE, [(i + 1, i) for i in range(stages - 1)])
    from_prev = jax.lax.ppermute(ct_own, STAGE, [(i, i + 1) for i in range(stages - 1)])
  return _unmessage(ct_own + from_next), _unmessage(ct_copy + from_prev)


_tie.defvjp(_tie_fwd, _tie_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _tie_pair(x, a, b):
  """Slots: ``x`` is the boundary split's entry, owned by stage ``a``, copy on ``b``."""
  del a, b
  return x


def _tie_pair_fwd(x, a, b):
  del a, b
  return x, None


def _tie_pair_bwd(a, b, _, ct):
  ct = jax.lax.optimization_barrier(_message(ct))  # as in ``_tie_bwd``
  return (_unmessage(ct + _swap(ct, a, b)),)


_tie_pair.defvjp(_tie_pair_fwd, _tie_pair_bwd)


def _totals(value, loss, defects):
  """One psum over stages of the objective, the loss and each split's defect."""
  out = jax.lax.psum(jnp.concatenate([jnp.stack([value, loss]), defects]), STAGE)
  return out[0], {"loss": out[1], "defect": out[2:]}


def _first_block(ctx: Stages, owner: int, w, p0, lam0, images, labels):
  """Block 0's term and defect on its owner (the only block that reads the batch),
  averaged over ``data`` as in data parallelism."""
  t0, d0 = _cond_on(
    owner,
    lambda: _first_term(ctx, w, p0, lam0, images, labels),
    (_scalar(), _scalar()),
    (DATA, STAGE),
  )
  return jax.lax.pmean((t0, d0), DATA)


# ----------------------------------------------------------------------------------
# The stacked layout: one stage's terms
# ----------------------------------------------------------------------------------


def _stacked_boundary(layout: layout_lib.Layout, protos, p0):
  """``(p_inner, p0, received)``: this stage's inner prototypes and ``P_0`` with every
  use of a boundary prototype going through the tie, and its copy of the previous
  stage's last one (stage 0: never read)."""
  m, d = layout.per_stage, layout.pad
  p_inner = protos["inner"]
  if layout.stages == 1:
    return p_inner, p0, jax.tree.map(lambda x: x[0], p_inner)
  s = jax.lax.axis_index(STAGE)
  own = jax.tree.map(lambda x: x[m - 1], p_inner)
  if d == m:  # stage 0 has no used entry: its boundary prototype is P_0
    own = jax.tree.map(lambda x, x0: jnp.where(s == 0, x0, x), own, p0)
  own, received = _tie(layout.stages, own, jax.tree.map(lambda x: x[0], protos["received"]))
  p_inner = jax.tree.map(lambda x, o: x.at[m - 1].set(o), p_inner, own)
  if d == m:
    p0 = jax.tree.map(lambda x0, o: jnp.where(s == 0, o, x0), p0, own)
  return p_inner, p0, received


def _previous(from_p0, x, x0, r):
  """Each inner entry's input prototypes: the previous entry's; entry 0 reads this
  stage's copy ``r`` of the previous stage's last one; stage 0 feeds ``P_0`` (``x0``)
  to its unused entries and first used one."""
  m = from_p0.shape[0]
  prev = jnp.concatenate([r[None], x[:-1]])
  return jnp.where(from_p0.reshape((m,) + (1,) * (x.ndim - 1)), x0[None], prev)


def _stacked_inner_inputs(ctx: Stages, constants, keys, block):
  """The inner entries' noise and mixtures (entry ``j`` runs block ``block[j]``)."""
  num_mixed = ctx.opts.num_mixed
  if keys is None:
    return constants["noise"]["inner"], (constants["mix"]["inner"] if num_mixed else None)
  eps = jax.vmap(lambda b: _eps(ctx, keys, b))(jnp.maximum(block - 1, 0))
  mix = jax.vmap(lambda b: _mix(ctx, keys, b))(jnp.maximum(block, 1)) if num_mixed else None
  return eps, mix


def _stacked_last_inputs(ctx: Stages, constants, keys):
  """The last block's noise and mixture (drawn inside the last stage's branch: no other
  stage pays for it)."""
  k, num_mixed = ctx.layout.num_splits, ctx.opts.num_mixed
  if keys is not None:
    return _eps(ctx, keys, k - 1), (_mix(ctx, keys, k) if num_mixed else None)
  mix = jax.tree.map(lambda x: x[0], constants["mix"]["last"]) if num_mixed else None
  return constants["noise"]["last"][0], mix


def _local_stacked(ctx: Stages, params, constants, images, labels, step):
  layout = ctx.layout
  k, m, d = layout.num_splits, layout.per_stage, layout.pad
  s = jax.lax.axis_index(STAGE)
  w = params["primal"]["weights"]
  protos = params["primal"]["aux"]["prototypes"]
  lams = params["dual"]["multipliers"]
  w0, p0, lam0 = jax.tree.map(lambda x: x[0], (w["first"], protos["first"], lams["first"]))
  p_inner, p0, received = _stacked_boundary(layout, protos, p0)
  t0, d0 = _first_block(ctx, 0, w0, p0, lam0, images, labels)
  j = jnp.arange(m)
  p_in = jax.tree.map(functools.partial(_previous, (s == 0) & (j <= d)), p_inner, p0, received)
  block = s * m + j - d + 1  # each entry's block index (< 1: unused)
  keys = _step_keys(ctx, constants, step)
  # every stage computes all m entries (stage 0's d unused ones too, masked below):
  # under a lax.cond that skipped them, XLA copied every residual of the vmapped
  # blocks out of the branch, which cost more than the skipped entries
  eps, mix = _own_rows(ctx, _stacked_inner_inputs(ctx, constants, keys, block), 1)
  inner_terms, defects = jax.vmap(
    functools.partial(_inner_term, ctx, 1), in_axes=(0, 0, 0, 0, 0, None if mix is None else 0)
  )(w["inner"], p_in, p_inner, lams["inner"], eps, mix)
  used = block >= 1
  t_inner = jnp.sum(jnp.where(used, inner_terms, 0.0))
  defects = jnp.where(used, defects, 0.0)

  last_in = jax.tree.map(lambda x: x[m - 1], p_inner)
  w_last = jax.tree.map(lambda x: x[0], w["last"])
  loss = _cond_on(
    layout.stages - 1,
    lambda: _last_term(
      ctx, w_last, last_in, *_own_rows(ctx, _stacked_last_inputs(ctx, constants, keys), 0)
    ),
    _scalar(),
    _sample_axes(ctx),
  )
  t_inner, defects, loss = _over_data(ctx, (t_inner, defects, loss))
  # each split's defect at its index (entry j of stage s is split block[j]), then one
  # psum of every scalar the step reports
  split_defects = jnp.zeros((k,), jnp.float32).at[jnp.maximum(block, 0)].add(defects)
  split_defects = split_defects.at[0].add(d0)
  return _totals(t0 + t_inner + loss, loss, split_defects)


# ----------------------------------------------------------------------------------
# The slot layout: one stage's terms
# ----------------------------------------------------------------------------------


def _slot_inputs(ctx: Stages, draws, l: int):
  """Block ``l``'s noise and mixture (drawn inside the owner's branch: no other stage
  pays for it)."""
  keys, noise, mixes = draws
  num_mixed = ctx.opts.num_mixed
  if keys is not None:
    eps = _eps(ctx, keys, l - 1, ctx.net.state_shapes[l - 1])
    return _own_rows(ctx, (eps, (_mix(ctx, keys, l) if num_mixed else None)), 0)
  return _own_rows(ctx, (noise[l - 1], (mixes[l - 1] if num_mixed else None)), 0)


def _slot_block(ctx: Stages, draws, w, protos, lams, l: int):
  """Block ``l``'s term (or loss) on its owner: ``(term, defect)`` or the loss."""
  k, owner = ctx.layout.num_splits, ctx.layout.owner
  p_in = protos[l - 1]  # on a boundary, the consumer's copy
  if l < k:
    return _cond_on(
      owner[l],
      lambda: _inner_term(ctx, l, w[l], p_in, protos[l], lams[l], *_slot_inputs(ctx, draws, l)),
      (_scalar(), _scalar()),
      _sample_axes(ctx),
    )
  return _cond_on(
    owner[k],
    lambda: _last_term(ctx, w[k], p_in, *_slot_inputs(ctx, draws, l)),
    _scalar(),
    _sample_axes(ctx),
  )


def _local_slots(ctx: Stages, params, constants, images, labels, step):
  k, owner = ctx.layout.num_splits, ctx.layout.owner
  w = jax.tree.map(lambda x: x[0], params["primal"]["weights"])
  protos = list(jax.tree.map(lambda x: x[0], params["primal"]["aux"]["prototypes"]))
  lams = jax.tree.map(lambda x: x[0], params["dual"]["multipliers"])
  for l in range(1, k + 1):  # every use of a boundary split goes through its tie
    if owner[l] != owner[l - 1]:
      protos[l - 1] = _tie_pair(protos[l - 1], owner[l - 1], owner[l])
  keys = _step_keys(ctx, constants, step)
  if keys is None:
    noise = jax.tree.map(lambda x: x[0], constants["noise"])
    mixes = jax.tree.map(lambda x: x[0], constants["mix"]) if ctx.opts.num_mixed else None
    draws = (None, noise, mixes)
  else:
    draws = (keys, None, None)
  t0, d0 = _first_block(ctx, owner[0], w[0], protos[0], lams[0], images, labels)
  inner = [_slot_block(ctx, draws, w, protos, lams, l) for l in range(1, k)]
  loss = _slot_block(ctx, draws, w, protos, lams, k)
  inner, loss = _over_data(ctx, (inner, loss))
  total = t0
  for t, _ in inner:  # block by block: one stage's sum rounds as the sequential one
    total = total + t
  return _totals(total + loss, loss, jnp.stack([d0] + [d for _, d in inner]))


# ----------------------------------------------------------------------------------
# The method's functions
# ----------------------------------------------------------------------------------


def _specs(tree, flags=None):
  flags = jax.tree.map(lambda _: True, tree) if flags is None else flags
  return jax.tree.map(lambda f: jax.P(STAGE) if f else jax.P(), flags)


def _objective(ctx: Stages, mesh, params, constants, batch):
  local = _local_stacked if ctx.layout.kind == "stacked" else _local_slots
  fn = jax.shard_map(
    functools.partial(local, ctx),
    mesh=mesh,
    in_specs=(
      _specs(params),
      _specs(constants, layout_lib.staged_constants(constants)),
      jax.P(DATA),
      jax.P(DATA),
      jax.P(),
    ),
    out_specs=(jax.P(), {"loss": jax.P(), "defect": jax.P()}),
  )
  return fn(params, constants, batch.images, batch.labels, jnp.asarray(batch.step))


def _init(layout: layout_lib.Layout, sequential: base.Method, rng, map_train):
  params, constants = sequential.init(rng, map_train)
  return (
    layout_lib.params_to_layout(layout, params),
    layout_lib.constants_to_layout(layout, constants),
  )


def _defects(layout: layout_lib.Layout, sequential: base.Method, params, constants, batch):
  """Evaluation: the sequential defects."""
  return sequential.defects(
    layout_lib.params_from_layout(layout, params),
    layout_lib.constants_from_layout(layout, constants),
    batch,
  )


def _primal_labels(primal):
  def label(path, _):
    keys = [getattr(p, "key", None) for p in path]
    if keys[0] == "weights":
      return "weights"
    return "sigma" if keys[-1] == "rho" else "aux"

  return jax.tree_util.tree_map_with_path(label, primal)


def _placement(params, constants) -> base.Placement:
  """Every parameter on stages; of the constants, the fixed draws."""
  return base.Placement(
    jax.tree.map(lambda _: base.STAGES, params),
    jax.tree.map(
      lambda f: base.STAGES if f else base.REPLICATED, layout_lib.staged_constants(constants)
    ),
  )
