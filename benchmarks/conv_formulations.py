"""Times one backprop training step of mnist_cnn per convolution and pooling formulation.

XLA's convolution and reduce_window *gradients* are slow on CPU, so
``lagrangian_jax.kernels`` offers an im2col ("patches") convolution and a reshape/slice
max pool. This script is the evidence for which patch extraction ``patches`` uses: it
measures, in one process, a jitted step (forward + cross-entropy + backward +
optax.sgd update) for every combination of

  conv  xla (nn.Conv) | patches_slices (one slice per kernel tap) | patches_separable
        (kh row slices, then kw column slices) | patches_lax
        (lax.conv_general_dilated_patches, itself a convolution)
  pool  xla (nn.max_pool) | fast (kernels.max_pool_fast)

and reports seconds per step (median after warm-up) and the ratio to nn.Conv +
nn.max_pool. ``kernels.conv2d_patches`` takes one slice per tap up to 3x3 kernels and
separable slicing above (one slice per tap compiles for seconds at 11x11); the "lax"
extraction, never the fastest, lives only here, where tests/test_networks.py checks all
three against nn.Conv.

Usage:
  python benchmarks/conv_formulations.py [--steps 10] [--warmup 2] [--batch 128]
  python benchmarks/conv_formulations.py --steps 1 --warmup 1 --batch 8   # smoke run

The last line printed is ``RESULT {json}`` for machine parsing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# Lets `python benchmarks/conv_formulations.py` run from a source checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
from jax import lax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from lagrangian_jax import kernels  # noqa: E402
from lagrangian_jax import networks  # noqa: E402

# The building blocks that kernels.conv2d_patches combines, timed one at a time here.
from lagrangian_jax.kernels import _explicit_padding  # noqa: E402
from lagrangian_jax.kernels import _im2col_separable  # noqa: E402
from lagrangian_jax.kernels import _im2col_slices  # noqa: E402

CONV_IMPLS = ("xla", "patches_slices", "patches_separable", "patches_lax")
POOL_IMPLS = ("xla", "fast")
PATCH_METHODS = ("slices", "separable", "lax")


def conv2d_method(x, kernel, bias=None, strides=(1, 1), padding="VALID", method="slices"):
  """``kernels.conv2d_patches`` with the patch extraction forced to ``method``.

  ``method`` is "slices" (one strided slice per kernel tap), "separable" (kh row slices,
  then kw column slices) or "lax" (``lax.conv_general_dilated_patches``).

  Example:
    >>> y = conv2d_method(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), method="lax")
    >>> y.shape, float(y[0, 0, 0, 0])
    ((2, 6, 6, 4), 27.0)
  """
  kh, kw, cin, cout = kernel.shape
  strides = tuple(strides)
  pads = _explicit_padding(padding, x.shape[1:3], (kh, kw), strides)
  if method == "slices":
    patches = _im2col_slices(x, (kh, kw), strides, pads)
    k2 = kernel.reshape(kh * kw * cin, cout)
  elif method == "separable":
    patches = _im2col_separable(x, (kh, kw), strides, pads)
    # Features come out in (kw, kh, cin) order.
    k2 = kernel.transpose(1, 0, 2, 3).reshape(kw * kh * cin, cout)
  elif method == "lax":
    patches = lax.conv_general_dilated_patches(
      x, (kh, kw), strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    # conv_general_dilated_patches orders features as (cin, kh, kw).
    k2 = kernel.transpose(2, 0, 1, 3).reshape(cin * kh * kw, cout)
  else:
    raise ValueError(
      f"method: unknown patch method {method!r}; allowed: {', '.join(PATCH_METHODS)}"
    )
  b, ho, wo, k = patches.shape
  y = (patches.reshape(b * ho * wo, k) @ k2).reshape(b, ho, wo, cout)
  return y if bias is None else y + bias


class MethodConv(nn.Module):
  """``kernels.PatchConv`` with the patch extraction forced to ``method``.

  Example:
    >>> m = MethodConv(4, (3, 3), method="separable")
    >>> p = m.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    >>> p["params"]["kernel"].shape, m.apply(p, jnp.ones((1, 8, 8, 3))).shape
    ((3, 3, 3, 4), (1, 6, 6, 4))
  """

  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: kernels.Padding = "VALID"
  method: str = "slices"

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    # PatchConv's (= nn.Conv's) initialisers, so all formulations start alike.
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features)
    )
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return conv2d_method(x, kernel, bias, self.strides, self.padding, self.method)


class MethodSegment(nn.Module):
  """``networks.Segment`` with its convolutions replaced by ``MethodConv``."""

  layers: tuple
  method: str
  pool_impl: str

  @nn.compact
  def __call__(self, x):
    n_conv = n_dense = 0
    # Same submodule names as networks.Segment, so parameter trees are interchangeable.
    for layer in self.layers:
      if isinstance(layer, networks.Conv):
        x = MethodConv(
          layer.features,
          layer.kernel_size,
          layer.strides,
          layer.padding,
          self.method,
          name=f"Conv_{n_conv}",
        )(x)
        n_conv += 1
      elif isinstance(layer, networks.Dense):
        x = nn.Dense(layer.features, name=f"Dense_{n_dense}")(x)
        n_dense += 1
      elif isinstance(layer, networks.MaxPool):
        if self.pool_impl == "xla":
          x = nn.max_pool(x, layer.window, layer.strides, "VALID")
        else:
          x = kernels.max_pool_fast(x, layer.window, layer.strides)
      elif isinstance(layer, networks.Flatten):
        x = x.reshape(x.shape[0], -1)
      elif isinstance(layer, networks.ReLU):
        x = nn.relu(x)
      else:
        raise TypeError(f"unknown layer spec {layer!r}")
    return x


def build_variant(conv_impl: str, pool_impl: str, name: str = "mnist_cnn"):
  """A ``SplitNetwork`` for one of ``CONV_IMPLS`` x ``POOL_IMPLS``.

  Example:
    >>> net = build_variant("patches_lax", "fast")
    >>> p = networks.init_network(net, jax.random.key(0))
    >>> networks.forward(net, p, jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
  """
  if conv_impl in kernels.CONV_IMPLS:
    return networks.build_network(name, conv_impl=conv_impl, pool_impl=pool_impl)
  method = conv_impl.removeprefix("patches_")
  if method not in PATCH_METHODS:
    raise ValueError(
      f"conv_impl: unknown value {conv_impl!r}; allowed: "
      f"{', '.join(kernels.CONV_IMPLS + CONV_IMPLS[1:])}"
    )
  # Built with nn.Conv for the layer specs, split and resolved pool, then re-segmented.
  net = networks.build_network(name, conv_impl="xla", pool_impl=pool_impl)
  return net._replace(
    segments=tuple(MethodSegment(seg.layers, method, seg.pool_impl) for seg in net.segments)
  )


def make_step(net, opt):
  """Jitted SGD step ``(params, opt_state, x, y) -> (params, opt_state, loss)``.

  Example:
    >>> step = make_step(networks.build_network("mlp", depth=1, width=4), optax.sgd(0.1))
    >>> callable(step)
    True
  """

  def loss_fn(params, x, y):
    logits = networks.forward(net, params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def time_variant(
  conv_impl: str, pool_impl: str, x, y, steps: int, warmup: int
) -> tuple[float, float]:
  """Returns (compile + first step seconds, median seconds per step).

  Example:
    >>> x, y = jnp.zeros((2, 28, 28, 1)), jnp.zeros((2,), jnp.int32)
    >>> first, sec = time_variant("patches_slices", "fast", x, y, steps=1, warmup=1)
    >>> first > 0 and sec > 0
    True
  """
  net = build_variant(conv_impl, pool_impl)
  params = networks.init_network(net, jax.random.key(0))
  opt = optax.sgd(0.01)
  opt_state = opt.init(params)
  step = make_step(net, opt)
  t0 = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, x, y)
  jax.block_until_ready(loss)
  first = time.perf_counter() - t0
  for _ in range(warmup - 1):
    params, opt_state, loss = step(params, opt_state, x, y)
  jax.block_until_ready(params)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready((params, loss))
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--batch", type=int, default=128)
  args = ap.parse_args()

  kx, ky = jax.random.split(jax.random.key(42))
  x = jax.random.normal(kx, (args.batch, 28, 28, 1), jnp.float32)
  y = jax.random.randint(ky, (args.batch,), 0, 10)

  backend = jax.default_backend()
  print(f"backend={backend} devices={jax.devices()} batch={args.batch} steps={args.steps} (median)")
  results = {}
  for conv in CONV_IMPLS:
    for pool in POOL_IMPLS:
      first, sec = time_variant(conv, pool, x, y, args.steps, args.warmup)
      results[f"{conv}+{pool}"] = sec
      print(
        f"  conv={conv:17s} pool={pool:5s}  {sec:.4f} s/step   (compile+first {first:.1f} s)",
        flush=True,
      )

  base = results["xla+xla"]
  print("ratio to xla+xla (lower is faster):")
  for k, v in results.items():
    print(f"  {k:24s} {v / base:.3f}   speed-up x{base / v:.2f}")
  best = min(results, key=results.get)
  # mnist_cnn's 3x3 kernels: "patches" takes one slice per tap, i.e. patches_slices.
  auto = f"{kernels.resolve_conv_impl('auto')}+{kernels.resolve_pool_impl('auto')}"
  print(f"fastest: {best}; 'auto' on {backend} resolves to: {auto}")
  summary = {
    "backend": backend,
    "batch": args.batch,
    "sec_per_step": {k: round(v, 4) for k, v in results.items()},
    "fastest": best,
    "auto": auto,
  }
  print("RESULT " + json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
  main()
