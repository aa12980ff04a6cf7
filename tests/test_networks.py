"""Tests for lagrangian_jax.networks and lagrangian_jax.kernels.

Shapes, splits, errors, from_config, parameter independence, and the conv/pool
formulations against nn.Conv / nn.max_pool (including the patch extractions that only
benchmarks/conv_formulations.py keeps).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

# conftest.py puts the repository root on sys.path: benchmarks/ holds the patch
# extractions that kernels.py does not offer, and they are still checked here.
from benchmarks import conv_formulations
from lagrangian_jax.errors import ConfigError
from lagrangian_jax.kernels import PatchConv
from lagrangian_jax.kernels import conv2d_patches
from lagrangian_jax.kernels import conv2d_rows
from lagrangian_jax.kernels import max_pool_fast
from lagrangian_jax.kernels import resolve_conv_impl
from lagrangian_jax.kernels import resolve_pool_impl
from lagrangian_jax.networks import apply_segment
from lagrangian_jax.networks import build_network
from lagrangian_jax.networks import forward
from lagrangian_jax.networks import from_config
from lagrangian_jax.networks import init_network
from lagrangian_jax.networks import segment_output

KEY = jax.random.key(0)


def _normal(seed, shape, scale=1.0):
  # numpy, not jax.random: every new shape would compile a threefry kernel.
  return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _x(net, batch=2, seed=1):
  return _normal(seed, (batch, *net.input_shape))


# ---------------------------------------------------------------- shapes ---

SMALL_CONFIGS = {
  "mnist_cnn": dict(name="mnist_cnn"),
  "cifar_lenet": dict(name="cifar_lenet"),
  "mlp": dict(name="mlp", depth=3, width=32),
  "alexnet64": dict(name="alexnet", input_shape=(64, 64, 3), num_classes=7),
}
EXPECTED_STATES = {
  "mnist_cnn": ((128,),),
  "cifar_lenet": ((84,),),
  "mlp": ((32,), (32,), (32,)),
  "alexnet64": ((256,),),
}


def _cheap_params(net):
  # Shapes from abstract init, values from one normal draw: avoids
  # compiling a truncated-normal initialiser per layer (slow on 2 cores).
  shapes = jax.eval_shape(lambda k: init_network(net, k), KEY)
  leaves, tree = jax.tree.flatten(shapes)
  return jax.tree.unflatten(tree, [_normal(i, l.shape, 0.05) for i, l in enumerate(leaves)])


@pytest.mark.parametrize("key", list(SMALL_CONFIGS))
def test_output_shapes(key):
  net = build_network(**SMALL_CONFIGS[key])
  assert net.state_shapes == EXPECTED_STATES[key]
  params = _cheap_params(net)  # init_network itself: test_stacked_segments_*
  assert len(params) == len(net.segments) == len(net.state_shapes) + 1
  outs = segment_output(net, params, _x(net))
  assert [o.shape[1:] for o in outs] == [*net.state_shapes, (net.num_classes,)]
  assert np.all(np.isfinite(outs[-1]))


@pytest.mark.parametrize("name", ["mnist_cnn", "cifar_lenet"])
def test_forward_equals_composition(name):
  net = build_network(name, split="every")
  params = _cheap_params(net)
  x = _x(net)
  # One jitted program for the whole net vs segment-by-segment calls.
  logits = jax.jit(lambda p, x: forward(net, p, x))(params, x)
  h = x
  for i in range(len(net.segments)):
    h = apply_segment(net, params, i, h)
  assert h.shape == (2, net.num_classes)
  np.testing.assert_allclose(logits, h, rtol=1e-4, atol=1e-5)


def test_alexnet_224_shapes_abstract():
  net = build_network("alexnet")
  assert net.input_shape == (224, 224, 3) and net.num_classes == 1000
  assert net.state_shapes == ((9216,),)
  # Abstract evaluation: no 60M-parameter init, no FLOPs.
  params = jax.eval_shape(lambda k: init_network(net, k), KEY)
  assert params[1]["Dense_0"]["kernel"].shape == (9216, 4096)
  out = jax.eval_shape(
    lambda p, x: forward(net, p, x), params, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  )
  assert out.shape == (2, 1000)
  every = build_network("alexnet", split="every")
  assert every.state_shapes == (
    (27, 27, 64),
    (13, 13, 192),
    (13, 13, 384),
    (13, 13, 256),
    (9216,),
    (4096,),
    (4096,),
  )


# ---------------------------------------------------------------- splits ---


def test_split_options():
  assert build_network("mnist_cnn").state_shapes == ((128,),)
  assert build_network("mnist_cnn", split="every").state_shapes == (
    (26, 26, 32),
    (9216,),
    (128,),
  )
  assert build_network("mnist_cnn", split=[2]).state_shapes == ((9216,),)  # the paper's
  assert build_network("mnist_cnn", split=[1]).state_shapes == ((26, 26, 32),)
  assert build_network("mnist_cnn", split=()).state_shapes == ()  # one segment = plain net
  assert build_network("cifar_lenet", split="every").state_shapes == (
    (14, 14, 6),
    (400,),
    (120,),
    (84,),
  )
  assert build_network("cifar_lenet", split=[2, 4]).state_shapes == ((400,), (84,))
  mlp = build_network("mlp")
  assert len(mlp.segments) == 5 and mlp.state_shapes == ((128,),) * 4  # default "every"
  assert len(build_network("mlp", split="default").segments) == len(
    build_network("mlp", split="every").segments
  )
  assert build_network("mlp", split=[2]).state_shapes == ((128,),)


def test_first_split_puts_several_blocks_before_the_first_split():
  net = build_network("mlp", depth=5, split="every", first_split=3, split_activation="deferred")
  named = [[type(layer).__name__ for layer in s.layers] for s in net.segments]
  assert named[0] == ["Flatten", "Dense", "ReLU", "Dense", "ReLU", "Dense"]
  assert named[1:] == [["ReLU", "Dense"]] * 3 and net.state_shapes == ((128,),) * 3
  # the same network as the explicit split list, parameters included
  listed = build_network("mlp", depth=5, split=[3, 4, 5], split_activation="deferred")
  assert listed == net
  cnn = build_network("mnist_cnn", split="every", first_split=2)
  assert cnn.state_shapes == ((9216,), (128,))
  cfg = ml_collections.ConfigDict(
    dict(name="mlp", split="every", depth=4, width=0, split_activation="relu",
         conv_impl="auto", first_split=2)
  )  # fmt: skip
  assert from_config(cfg, num_classes=10, input_shape=(28, 28, 1)).state_shapes == ((128,),) * 3
  with pytest.raises(ConfigError, match=r"^config.network.first_split: applies to split='every'"):
    build_network("mlp", split=[2], first_split=2)
  with pytest.raises(ConfigError, match=r"^config.network.first_split: 5 leaves no split: .* 5"):
    build_network("mlp", depth=4, split="every", first_split=5)
  with pytest.raises(ConfigError, match=r"^config.network.first_split: must be a positive"):
    build_network("mlp", split="every", first_split=0)


@pytest.mark.parametrize(
  "kwargs, words",
  [
    (dict(name="mnist_cnn", split=[0]), ["split", "[0]", "1..3"]),
    (dict(name="mnist_cnn", split=[4]), ["split", "[4]", "1..3"]),
    (dict(name="cifar_lenet", split=[3, 2]), ["split", "strictly increasing", "1..4"]),
    (dict(name="cifar_lenet", split=[2, 2]), ["split", "strictly increasing"]),
    (dict(name="mnist_cnn", split="sometimes"), ["split", "'sometimes'", "every", "default"]),
    (dict(name="mnist_cnn", split=[1.0]), ["split"]),
    (dict(name="resnet"), ["name", "'resnet'", "mnist_cnn", "alexnet", "mlp"]),
    (dict(name="mnist_cnn", split_activation="tanh"), ["split_activation", "identity", "relu"]),
    (dict(name="mnist_cnn", conv_impl="cudnn"), ["conv_impl", "patches", "rows", "xla"]),
    (dict(name="mnist_cnn", init="xavier"), ["init", "'xavier'", "lecun_normal", "he_normal"]),
    (dict(name="mnist_cnn", pool_impl="avg"), ["pool_impl", "fast"]),
    (dict(name="mnist_cnn", depth=3), ["depth", "mlp"]),
    (dict(name="mlp", depth=0), ["depth"]),
    (dict(name="alexnet", input_shape=(32, 32, 3)), ["input_shape", "too small"]),
    (dict(name="mnist_cnn", input_shape=(28, 28)), ["input_shape"]),
  ],
)
def test_errors(kwargs, words):
  with pytest.raises(ConfigError) as err:
    build_network(**kwargs)
  msg = str(err.value)
  assert "\n" not in msg
  # Names the config key first: config.network.<key>: for config.network keys,
  # config.network: <argument> for the arguments that are none (input_shape, pool_impl).
  assert msg.startswith(f"config.network.{words[0]}: ") or msg.startswith(
    f"config.network: {words[0]} "
  ), msg
  for w in words:
    assert w in msg, (w, msg)


def test_apply_segment_bad_index():
  net = build_network("mlp", depth=1, width=4)
  params = _cheap_params(net)
  with pytest.raises(IndexError, match="index"):
    apply_segment(net, params, 2, jnp.zeros((1, 28, 28, 1)))


# -------------------------------------------------- parameter independence ---


def test_stacked_segments_do_not_share_weights():
  net = build_network("mlp", depth=4, width=16)  # split "every"
  # Hidden segments are identical Modules; only fold_in keeps them apart.
  assert net.segments[1] == net.segments[2] == net.segments[3]
  params = init_network(net, KEY)
  k = [np.asarray(params[i]["Dense_0"]["kernel"]) for i in (1, 2, 3)]
  assert not np.allclose(k[0], k[1]) and not np.allclose(k[1], k[2])
  # Deterministic given the key; different for another key.
  again = init_network(net, KEY)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)))
  other = init_network(net, jax.random.key(1))
  assert not np.allclose(other[2]["Dense_0"]["kernel"], params[2]["Dense_0"]["kernel"])

  # A segment's output depends only on its own params: gradient is zero elsewhere.
  h = _normal(0, (3, 16))
  grads = jax.grad(lambda p: jnp.sum(apply_segment(net, p, 2, h) ** 2))(params)
  for i, g in enumerate(grads):
    norm = sum(float(jnp.abs(leaf).sum()) for leaf in jax.tree.leaves(g))
    assert (norm > 0) == (i == 2), (i, norm)

  # Changing segment 2's params leaves the other segments' outputs unchanged.
  bumped = tuple(jax.tree.map(lambda a: a + 1.0, p) if i == 2 else p for i, p in enumerate(params))
  for i in (1, 3):
    np.testing.assert_array_equal(
      apply_segment(net, params, i, h), apply_segment(net, bumped, i, h)
    )
  assert not np.allclose(apply_segment(net, params, 2, h), apply_segment(net, bumped, 2, h))


# ---------------------------------------------------------- split activation ---


def test_split_activation_relu_vs_identity():
  ident = build_network("mnist_cnn", split="every", split_activation="identity")
  relu = build_network("mnist_cnn", split="every", split_activation="relu")
  params = _cheap_params(ident)
  # Activations carry no params: the trees are interchangeable.
  assert jax.tree.structure(params) == jax.tree.structure(_cheap_params(relu))
  x = _x(ident, batch=2)
  h_id = apply_segment(ident, params, 0, x)
  h_re = apply_segment(relu, params, 0, x)
  assert float(h_id.min()) < 0.0  # DistProp state is pre-activation
  assert float(h_re.min()) >= 0.0  # ExtraProp keeps the ReLU
  np.testing.assert_allclose(h_re, jax.nn.relu(h_id), rtol=1e-6, atol=1e-6)
  # Inside a segment the ReLU is always there: segment 1 of identity applied
  # to the relu'd state equals the relu net's segment 1 (up to its own split act).
  s_id = apply_segment(ident, params, 1, h_re)
  s_re = apply_segment(relu, params, 1, h_re)
  np.testing.assert_allclose(s_re, jax.nn.relu(s_id), rtol=1e-5, atol=1e-5)
  # Default split: relu on the (128,) state.
  d = build_network("mlp", depth=1, width=8, split_activation="relu")
  assert float(apply_segment(d, _cheap_params(d), 0, x).min()) >= 0.0


def test_split_activation_deferred_keeps_the_function_and_frees_the_states():
  relu = build_network("mnist_cnn", split="every", split_activation="relu")
  deferred = build_network("mnist_cnn", split="every", split_activation="deferred")
  params = _cheap_params(relu)
  x = _x(relu, batch=2)
  h_re = apply_segment(relu, params, 0, x)
  h_de = apply_segment(deferred, params, 0, x)
  assert float(h_de.min()) < 0.0  # free (pre-activation) states
  np.testing.assert_allclose(h_re, jax.nn.relu(h_de), rtol=1e-6, atol=1e-6)
  # the next segment opens with the ReLU: same value from either state
  np.testing.assert_allclose(
    apply_segment(deferred, params, 1, h_de), apply_segment(deferred, params, 1, h_re), atol=1e-6
  )
  # and the whole network computes the same function
  np.testing.assert_allclose(
    forward(deferred, params, x), forward(relu, params, x), rtol=1e-5, atol=1e-5
  )


# ---------------------------------------------------- conv / pool formulations ---

CONV_CASES = [
  # (H, cin, cout, kernel, strides, padding)
  (10, 3, 4, (3, 3), (1, 1), "VALID"),
  (9, 2, 3, (3, 3), (1, 1), "SAME"),
  (8, 3, 4, (5, 5), (2, 2), "SAME"),
  (23, 3, 4, (11, 11), (4, 4), ((2, 2), (2, 2))),  # AlexNet conv1
  (9, 2, 3, (5, 5), (1, 1), ((2, 2), (2, 2))),
]


def _case_id(c):
  return f"k{c[3][0]}s{c[4][0]}{c[5] if isinstance(c[5], str) else 'pad'}"


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_patch_conv_matches_nn_conv(case):
  h, cin, cout, ks, st, pad = case
  x = _normal(2, (2, h, h + 1, cin))
  ref = nn.Conv(cout, ks, st, pad)
  kernel = _normal(3, (*ks, cin, cout))
  params = {"kernel": kernel, "bias": _normal(3, (cout,))}
  shapes = jax.tree.map(jnp.shape, params)
  assert jax.tree.map(jnp.shape, jax.eval_shape(ref.init, KEY, x)["params"]) == shapes
  w = _normal(4, ref.apply({"params": params}, x).shape)

  def loss(apply_fn):
    return lambda p, x: jnp.sum(w * apply_fn(p, x))

  ref_fn = jax.jit(
    jax.value_and_grad(loss(lambda p, x: ref.apply({"params": p}, x)), argnums=(0, 1))
  )
  ref_val, (ref_gp, ref_gx) = ref_fn(params, x)
  # One-slice-per-tap compiles slowly for big kernels and "auto" (kernels.PatchConv,
  # what conv_impl="patches" runs) never uses it there; the forced extractions are the
  # benchmark's.
  methods = ("slices", "separable", "lax") if ks[0] * ks[1] <= 9 else ("auto", "separable", "lax")
  # "rows" (kernels.conv2d_rows, what "auto" runs on CPU) for every case: strided
  # columns take its fallback to the patches.
  for method in (*methods, "rows"):
    if method in ("auto", "rows"):
      mod = PatchConv(cout, ks, st, pad, formulation="patches" if method == "auto" else "rows")
    else:
      mod = conv_formulations.MethodConv(cout, ks, st, pad, method)
    assert jax.tree.map(jnp.shape, jax.eval_shape(mod.init, KEY, x)["params"]) == shapes
    fn = jax.jit(
      jax.value_and_grad(loss(lambda p, x, mod=mod: mod.apply({"params": p}, x)), argnums=(0, 1))
    )
    val, (gp, gx) = fn(params, x)
    np.testing.assert_allclose(val, ref_val, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(gx, ref_gx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gp["kernel"], ref_gp["kernel"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gp["bias"], ref_gp["bias"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("conv", [conv2d_patches, conv2d_rows])
@pytest.mark.parametrize("strides", [(2, 2), (2, 1), (1, 1)])
def test_conv_forward_matches_lax(conv, strides):
  x = _normal(0, (2, 12, 12, 3))
  k = _normal(5, (3, 3, 3, 5))
  y = conv(x, k, None, strides, "SAME")
  ref = jax.lax.conv_general_dilated(
    x, k, strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  assert y.shape == ref.shape
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
  "shape, window, strides",
  [
    ((2, 8, 6, 3), (2, 2), (2, 2)),
    ((2, 9, 7, 3), (2, 2), (2, 2)),  # ragged border dropped (VALID)
    ((2, 13, 11, 3), (3, 3), (2, 2)),  # AlexNet overlapping pool
  ],
)
def test_fast_pool_matches_nn_max_pool(shape, window, strides):
  x = _normal(0, shape)  # continuous values: no ties in windows
  ref = nn.max_pool(x, window, strides, "VALID")
  out = jax.jit(max_pool_fast, static_argnums=(1, 2))(x, window, strides)
  np.testing.assert_array_equal(out, ref)
  w = _normal(6, ref.shape)
  g_ref = jax.jit(jax.grad(lambda x: jnp.sum(w * nn.max_pool(x, window, strides, "VALID"))))(x)
  g = jax.jit(jax.grad(lambda x: jnp.sum(w * max_pool_fast(x, window, strides))))(x)
  np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-6)


def test_formulations_share_params_and_agree():
  """Whole mnist_cnn: params from the xla build run unchanged in the patches/fast build."""
  xla = build_network("mnist_cnn", conv_impl="xla", pool_impl="xla")
  x = _x(xla, batch=4)
  y = jnp.array([0, 3, 7, 9])

  def loss(net):
    return jax.jit(
      jax.value_and_grad(
        lambda p: jnp.mean(jax.nn.log_softmax(forward(net, p, x))[jnp.arange(4), y])
      )
    )

  params = _cheap_params(xla)
  v1, g1 = loss(xla)(params)
  for conv_impl in ("patches", "rows"):
    fast = build_network("mnist_cnn", conv_impl=conv_impl, pool_impl="fast")
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, _cheap_params(fast))
    v2, g2 = loss(fast)(params)
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_auto_resolution():
  assert resolve_conv_impl("auto", "cpu") == "rows"
  assert resolve_conv_impl("auto", "gpu") == "xla"
  assert resolve_conv_impl("auto", "tpu") == "xla"
  assert resolve_pool_impl("auto", "cpu") == "fast"
  assert resolve_pool_impl("auto", "gpu") == "xla"
  assert resolve_conv_impl("patches") == "patches"
  assert resolve_conv_impl("rows") == "rows"


# ---------------------------------------------------------------- from_config ---


def _network_config(**overrides):
  # The keys of configs/default.py's config.network.
  config = ml_collections.ConfigDict(
    dict(
      name="mnist_cnn",
      split="default",
      split_activation="identity",
      conv_impl="auto",
      depth=0,
      width=0,
      init="lecun_normal",
    )
  )
  config.update(overrides)
  return config


@pytest.mark.parametrize(
  "overrides, kwargs",
  [
    (dict(), dict(name="mnist_cnn")),
    (
      dict(split="1", split_activation="relu", conv_impl="xla"),
      dict(name="mnist_cnn", split=[1], split_activation="relu", conv_impl="xla"),
    ),
    (
      dict(name="mlp", split="1,3", depth=3, width=16),
      dict(name="mlp", split=[1, 3], depth=3, width=16),
    ),
    (dict(name="mlp", split="", width=8), dict(name="mlp", split=[], width=8)),
    (dict(init="he_normal"), dict(name="mnist_cnn", init="he_normal")),
  ],
)
def test_from_config_equals_build_network(overrides, kwargs):
  net = from_config(_network_config(**overrides), num_classes=7, input_shape=[28, 28, 1])
  assert net == build_network(num_classes=7, input_shape=(28, 28, 1), **kwargs)


@pytest.mark.parametrize(
  "overrides, needle",
  [
    (dict(split="1,x"), "config.network.split: expected"),
    (dict(split="7"), "config.network.split: value(s) [7] out of range"),
    (dict(name="resnet"), "config.network.name: unknown network 'resnet'"),
    (dict(depth=2), "config.network.depth: only applies to name='mlp'"),
    (dict(init="he"), "config.network.init: unknown value 'he'; allowed: lecun_normal, he_normal"),
    (dict(init=None), "config.network.init: unknown value None"),
  ],
)
def test_from_config_errors_name_the_key(overrides, needle):
  with pytest.raises(ConfigError) as err:
    from_config(_network_config(**overrides), num_classes=10, input_shape=(28, 28, 1))
  assert str(err.value).startswith(needle), str(err.value)


def test_from_config_without_init_key_is_lecun():
  # Configs written before config.network.init existed build flax's default network.
  config = _network_config(name="mlp", width=8)
  del config["init"]
  net = from_config(config, num_classes=10, input_shape=(28, 28, 1))
  assert net == build_network("mlp", width=8, init="lecun_normal")


# ------------------------------------------------------------ initialisation ---


@pytest.mark.parametrize("conv_impl", ["xla", "patches", "rows"])
def test_default_init_is_flax_default(conv_impl):
  # init="lecun_normal" (the default) must leave every existing result bit-identical: the
  # same parameters as nn.Conv / nn.Dense built without a kernel_init.
  class Flax(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(32, (3, 3), padding="VALID", name="Conv_0")(x))
      x = nn.max_pool(nn.Conv(64, (3, 3), padding="VALID", name="Conv_1")(x), (2, 2), (2, 2))
      return nn.Dense(128, name="Dense_0")(x.reshape(x.shape[0], -1))

  net = build_network("mnist_cnn", split=[3], conv_impl=conv_impl)
  assert net == build_network("mnist_cnn", split=[3], conv_impl=conv_impl, init="lecun_normal")
  ours = init_network(net, KEY)[0]
  x = jnp.zeros((1, 28, 28, 1))
  ref = jax.jit(Flax().init)(jax.random.fold_in(KEY, 0), x)["params"]
  assert jax.tree.structure(ours) == jax.tree.structure(ref)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_he_normal_kernel_std():
  # He: std sqrt(2 / fan_in) (flax rescales its truncated normal to that exact std);
  # lecun: sqrt(1 / fan_in). 512 x 512 = 262,144 draws: the sample std is within 0.2%
  # of the true one (1 / sqrt(2 N) relative), so 2% is a safe tolerance.
  he = init_network(build_network("mlp", depth=2, width=512, init="he_normal"), KEY)
  lecun = init_network(build_network("mlp", depth=2, width=512), KEY)
  k_he, k_lecun = (np.asarray(p[1]["Dense_0"]["kernel"]) for p in (he, lecun))
  assert k_he.shape == (512, 512)
  np.testing.assert_allclose(k_he.std(), np.sqrt(2 / 512), rtol=0.02)
  np.testing.assert_allclose(k_lecun.std(), np.sqrt(1 / 512), rtol=0.02)
  assert np.all(np.asarray(he[1]["Dense_0"]["bias"]) == 0)
  # Convolutions (both formulations, the same draws): fan_in = 3 * 3 * 32 = 288, 18,432
  # draws (0.5% relative), 4% tolerance.
  for conv_impl in ("xla", "patches", "rows"):
    p = init_network(build_network("mnist_cnn", conv_impl=conv_impl, init="he_normal"), KEY)
    k = np.asarray(p[0]["Conv_1"]["kernel"])
    assert k.shape == (3, 3, 32, 64)
    np.testing.assert_allclose(k.std(), np.sqrt(2 / 288), rtol=0.04)


def test_patch_conv_kernel_init_like_nn_conv():
  x = jnp.ones((1, 8, 8, 3))
  init = nn.initializers.he_normal()
  ours = PatchConv(4, (3, 3), kernel_init=init).init(KEY, x)["params"]
  ref = nn.Conv(4, (3, 3), kernel_init=init).init(KEY, x)["params"]
  np.testing.assert_array_equal(ours["kernel"], ref["kernel"])
