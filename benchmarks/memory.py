"""XLA's memory figures of one training step, at ``config.dtype`` float32 and bfloat16.

For each config (default: ``configs/imagenet_backprop.py`` and
``configs/imagenet_distprop.py``) and each dtype, the step that ``state.build_experiment``
jits (one seed, its state donated) is compiled from shapes alone: the state from
``state.abstract_state`` (nothing allocated, no data read; ``--num_train`` rows for the
per-example tables, ImageNet's 1,268,355 training images by default) and a batch of
``--batch_size`` images of ``--image_size`` pixels. ``compiled.memory_analysis()`` gives
the bytes XLA assigns: ``temp`` (activations, gradients and other intermediates),
``argument`` (the state and the batch), ``output`` (the new state and the metrics) and
``alias`` (outputs written over donated arguments).

The figures are those of the default backend (``JAX_PLATFORMS`` picks another): each
backend fuses and lays out buffers its own way. XLA:CPU has no bfloat16 convolution or
matmul: it widens each one's operands to float32 (``convert``), computes in float32 and
narrows the result, so at bfloat16 its temporaries hold both types and exceed float32's
(the compiled AlexNet step's 14 convolutions and 9 dots are all ``f32``); a GPU or TPU
computes them in bfloat16. ``--conv_impl`` defaults to ``xla``, the convolution an
accelerator runs (``auto`` picks it on GPU/TPU).

Run:
  python benchmarks/memory.py
  python benchmarks/memory.py --image_size=64 --batch_size=8 --num_train=64  # seconds

Ends with one ``RESULT key=value ...`` line, ``<config>_<dtype>_<kind>_mib`` each.
"""

import argparse
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from lagrangian_jax import networks  # noqa: E402
from lagrangian_jax import sharding  # noqa: E402
from lagrangian_jax import state as state_lib  # noqa: E402
from lagrangian_jax import step as step_lib  # noqa: E402
from lagrangian_jax.methods import base  # noqa: E402

KINDS = ("temp", "argument", "output", "alias")
IMAGENET_TRAIN = 1_268_355  # 99% of 1,281,167: configs/imagenet_distprop.py's split


def config_of(name: str, dtype: str, args):
  config = importlib.import_module(f"configs.{name}").get_config()
  config.dtype = dtype
  config.batch_size = args.batch_size
  config.data.image_size = args.image_size
  config.network.conv_impl = args.conv_impl
  return config


def with_seed_axis(tree):
  """Shapes of ``tree`` with the leading seed axis of a ``TrainState`` (one seed)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((1, *x.shape), x.dtype), tree)


def compile_step(config, num_train: int, num_classes: int):
  """The jitted, vmapped, state-donating step of ``build_experiment``, compiled from
  shapes only."""
  shape = (config.data.image_size, config.data.image_size, 3)
  net = networks.from_config(
    config.network, num_classes=num_classes, input_shape=shape, dtype=config.dtype
  )
  shapes = state_lib.abstract_state(config, net, num_train)
  keep_average = config.average_decay > 0
  placement = sharding.state_placement(
    shapes.method, shapes.tx, shapes.params, shapes.constants, keep_average
  )
  average = shapes.params["primal"]["weights"] if keep_average else {}
  state = with_seed_axis(
    state_lib.TrainState(
      jax.ShapeDtypeStruct((), jnp.int32),
      shapes.params,
      shapes.opt_state,
      shapes.constants,
      average,
    )
  )
  b = config.batch_size
  batch = with_seed_axis(
    base.Batch(
      jax.ShapeDtypeStruct((b, *shape), jnp.float32),
      jax.ShapeDtypeStruct((b,), jnp.int32),
      jax.ShapeDtypeStruct((b,), jnp.int32),
      jax.ShapeDtypeStruct((), jnp.int32),
    )
  )
  step = step_lib.make_train_step(shapes.method, shapes.tx, placement.tables, config.average_decay)
  return jax.jit(jax.vmap(step), donate_argnums=0).lower(state, batch).compile()


def memory_mib(compiled) -> dict[str, float]:
  """``{kind: MiB}`` of ``compiled.memory_analysis()``."""
  stats = compiled.memory_analysis()
  return {kind: getattr(stats, f"{kind}_size_in_bytes") / 2**20 for kind in KINDS}


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--configs", default="imagenet_backprop,imagenet_distprop")
  p.add_argument("--dtypes", default=",".join(networks.DTYPES))
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--num_train", type=int, default=IMAGENET_TRAIN)
  p.add_argument("--num_classes", type=int, default=1000)
  p.add_argument("--conv_impl", default="xla", help="config.network.conv_impl")
  args = p.parse_args(argv)
  args.configs = [c for c in args.configs.split(",") if c]
  args.dtypes = [d for d in args.dtypes.split(",") if d]
  here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  for name in args.configs:
    if not os.path.isfile(os.path.join(here, f"{name}.py")):
      p.error(f"--configs: no configs/{name}.py")
  for dtype in args.dtypes:
    if dtype not in networks.DTYPES:
      p.error(f"--dtypes: {dtype!r} is not one of {', '.join(networks.DTYPES)}")
  return args


def main(argv=None):
  args = parse(sys.argv[1:] if argv is None else argv)
  print(
    f"backend: {jax.default_backend()}  images {args.image_size}px, batch {args.batch_size}, "
    f"{args.num_train:,} training rows, conv_impl {args.conv_impl}"
  )
  print(f"{'config':>20} {'dtype':>9} " + " ".join(f"{k + ' MiB':>13}" for k in KINDS))
  result = {}
  for name in args.configs:
    for dtype in args.dtypes:
      start = time.perf_counter()
      compiled = compile_step(config_of(name, dtype, args), args.num_train, args.num_classes)
      mib = memory_mib(compiled)
      print(
        f"{name:>20} {dtype:>9} "
        + " ".join(f"{mib[k]:13.1f}" for k in KINDS)
        + f"   (compiled in {time.perf_counter() - start:.0f} s)",
        flush=True,
      )
      result.update({f"{name}_{dtype}_{k}_mib": v for k, v in mib.items()})
  print("RESULT " + " ".join(f"{k}={v:.1f}" for k, v in result.items()))


if __name__ == "__main__":
  main()
