"""Launch a training run: ``python -m experiments.main --config=configs/X.py --workdir=DIR``.

Running the same command again resumes from the last checkpoint in DIR. Expected
failures (bad config key, missing data, divergence) print one line and exit 1.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from lagrangian_jax import errors
from lagrangian_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if not FLAGS["verbosity"].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  if FLAGS.distributed:
    jax.distributed.initialize()
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
  app.run(main)
