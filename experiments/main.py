"""Launch a training run: ``python -m experiments.main --config=configs/X.py --workdir=DIR``.

Running the same command again resumes from the last checkpoint in DIR. Expected
failures (bad config key, missing data, divergence) print one line and exit 1.

Several processes (hosts) run the same command, each with its own ``--process_id``::

  python -m experiments.main --config=... --workdir=DIR \
      --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0   # and =1

or ``--distributed`` alone where JAX detects the cluster itself (Cloud TPU, SLURM, Open
MPI). ``jax.distributed.initialize`` runs before anything touches a device.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from experiments import common
from lagrangian_jax import errors
from lagrangian_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.DEFINE_bool(
  "distributed",
  False,
  "Multi-process run: jax.distributed.initialize(), with the cluster auto-detected (TPU, "
  "SLURM, Open MPI) unless the three flags below are given.",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed() -> None:
  """``jax.distributed.initialize`` from the flags; a no-op for a one-process run."""
  given = {
    "coordinator_address": FLAGS.coordinator_address,
    "num_processes": FLAGS.num_processes,
    "process_id": FLAGS.process_id,
  }
  if not FLAGS.distributed and all(v is None for v in given.values()):
    return

  def bad(flag, message):
    raise errors.ConfigError(f"--{flag}: {message}")

  missing = [k for k, v in given.items() if v is None]
  if missing and not FLAGS.distributed:  # without --distributed JAX must not guess the rest
    bad(missing[0], "is needed with the other two multi-process flags (or pass --distributed)")
  n, i = FLAGS.num_processes, FLAGS.process_id
  if n is not None and n < 1:
    bad("num_processes", f"must be >= 1, got {n}")
  if i is not None and (i < 0 or (n is not None and i >= n)):
    bad("process_id", f"must be in [0, num_processes), got {i}")
  try:
    jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})
  except Exception as e:  # noqa: BLE001 (JAX raises RuntimeError / ValueError here)
    raise errors.ConfigError(
      f"jax.distributed.initialize failed ({type(e).__name__}: "
      f"{' '.join(str(e).split())[:300]}); check --coordinator_address, --num_processes "
      "and --process_id, or run without --distributed"
    ) from e


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if not FLAGS["verbosity"].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  try:
    initialize_distributed()
  except errors.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  logging.info(
    "JAX process %d / %d, local devices: %s",
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
  )
  try:
    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except errors.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(train.summary_line(summary), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
