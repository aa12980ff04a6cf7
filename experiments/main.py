"""Launch a training run: ``python -m experiments.main --config=configs/X.py --workdir=DIR``.

Running the same command again resumes from the last checkpoint in DIR. Expected
failures (bad config key, missing data, divergence) print one line and exit 1. SIGTERM
(a preemption notice, on any process) saves the step reached, prints ``preempted at step
N: checkpoint saved in DIR; rerun the same command to resume`` and exits 75 (EX_TEMPFAIL):
a job script reruns the command on 75, stops on 0 (finished) and reports 1 (failed).

Several processes (hosts) run the same command, each with its own ``--process_id``::

  python -m experiments.main --config=... --workdir=DIR \
      --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0   # and =1

or ``--distributed`` alone where JAX detects the cluster itself (Cloud TPU, SLURM, Open
MPI). ``jax.distributed.initialize`` runs before anything touches a device; a process
that does not join within ``--initialization_timeout`` seconds fails every other one with
one line. Then the processes compare their configs (every key) and library versions and
refuse to run on a difference, naming the key and the processes
(``identity.check_processes_agree``).
"""

import os
import sys
import threading

from absl import app
from absl import flags
from absl import logging
import jax
from jax.experimental.compilation_cache import compilation_cache
from ml_collections import config_flags

from experiments import common
from lagrangian_jax import config_rules
from lagrangian_jax import errors
from lagrangian_jax import identity
from lagrangian_jax import preemption
from lagrangian_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "workdir",
  None,
  "Directory for checkpoints, metrics and plots. Exit status: 0 finished, 1 failed, 75 "
  "preempted (SIGTERM; the step reached is saved: rerun the same command).",
)
flags.DEFINE_bool(
  "distributed",
  False,
  "Multi-process run: jax.distributed.initialize(), with the cluster auto-detected (TPU, "
  "SLURM, Open MPI) unless the three flags below are given.",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
flags.DEFINE_integer(
  "initialization_timeout",
  300,
  "Multi-process: seconds to wait for every process to join before giving up.",
)
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
  wait = FLAGS.initialization_timeout
  if wait < 1:
    bad("initialization_timeout", f"must be >= 1 second, got {wait}")
  watchdog = _give_up_after(
    wait,
    f"not every process joined the run within --initialization_timeout={wait} s "
    f"(coordinator {FLAGS.coordinator_address or 'auto-detected'}, {n or 'auto'} processes); "
    "start every process with the same --coordinator_address and --num_processes",
  )
  try:
    # JAX's own deadline, later than the watchdog's, aborts with a C++ stack trace
    jax.distributed.initialize(
      **{k: v for k, v in given.items() if v is not None}, initialization_timeout=wait + 60
    )
  except Exception as e:  # noqa: BLE001 (JAX raises RuntimeError / ValueError here)
    raise errors.ConfigError(
      f"jax.distributed.initialize failed ({type(e).__name__}: "
      f"{' '.join(str(e).split())[:300]}); check --coordinator_address, --num_processes "
      "and --process_id, or run without --distributed"
    ) from e
  finally:
    watchdog.cancel()


def _give_up_after(seconds: float, message: str) -> threading.Timer:
  """A started timer that prints ``error: <message>`` and ends the process (``os._exit``:
  the main thread is blocked inside JAX's connect, which Python cannot interrupt)."""

  def give_up():
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(1)

  timer = threading.Timer(seconds, give_up)
  timer.daemon = True
  timer.start()
  return timer


def use_compilation_cache(config) -> None:
  """JAX's persistent compilation cache in ``config.compilation_cache_dir`` (``""``: off),
  set before anything compiles (JAX reads the setting at its first compile): a restarted
  or preempted run, and every host of a pod, loads the compiled step instead of compiling
  it again. Every compile of at least a second is kept."""
  folder = config.get("compilation_cache_dir", "")
  config_rules.check("compilation_cache_dir", folder)
  if folder:
    compilation_cache.set_cache_dir(os.path.expanduser(folder))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if not FLAGS["verbosity"].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  try:
    use_compilation_cache(FLAGS.config)
    initialize_distributed()
    identity.check_processes_agree(FLAGS.config)  # before any collective could hang
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
  except preemption.Preempted as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_STATUS)
  except errors.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(train.summary_line(summary), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
