"""Every config key with a neutral value: the base of every config, no method's tuned one.

Each ``configs/<name>.py`` starts from :func:`get_config` and sets what its method or data
set needs (``configs/default.py``: DistProp's tuned main job, with its gradient clip).
Nothing here was tuned for one method: no gradient clip, constant rates, one seed.
Each section of keys is one small function below, in the order ``get_config`` adds them.

Any key can be overridden on the command line, e.g. ``--config.num_steps=100``.

Example:
  >>> from configs import base
  >>> config = base.get_config()
  >>> config.grad_clip, config.evaluators
  (0.0, 'accuracy,defects')
"""

import ml_collections


def solver(config: ml_collections.ConfigDict) -> None:
  """The method and its optimizer (``lagrangian_jax.optimizers.from_config``).

  ``penalty`` is the augmented Lagrangian's (and the quadratic penalty's) ``c`` of the
  lifted methods (``methods/lifted.py``). The method of multipliers
  (``solver="multipliers"``) steps ``lambda += c g`` with the same ``c``: that step is the
  exact ascent on the multipliers of ``L_c`` (Hestenes-Powell), so one key holds both by
  construction. DistProp's augmented term has its own ``distprop.augmented_coefficient``.

  ``dual_optimizer`` gives the multipliers their own step rule; its default ``"primal"``
  is the primal's rule (every config's arithmetic before the key). The penalty's
  ``"descent"`` has no dual step and the method of multipliers' ``lambda += c g`` refuses
  any other rule.
  """
  config.method = "distprop"  # any name in lagrangian_jax.methods.METHODS
  config.solver = ""  # '' = the method's default, or one of optimizers.SOLVERS
  config.optimizer = "adagrad"  # step rule inside the solver: optimizers.STEP_RULES
  config.accumulate = "both"  # ExtraAdagrad accumulator at both half-steps, or "update"
  config.adagrad_init = 0.1  # Adagrad's initial accumulator
  config.momentum = 0.0  # for optimizer="sgd"
  # the multipliers' step rule: "primal" (the primal's rule: optimizer, adagrad_init,
  # momentum) | sgd (plain, no momentum) | adagrad (from dual_adagrad_init) | adam
  # (optimizers.dual_rule_from_config). The authors' GDA: sgd at 1.39e-4, Adagrad primal
  config.dual_optimizer = "primal"
  config.dual_adagrad_init = 0.1  # the dual's Adagrad accumulator (dual_optimizer="adagrad")
  config.grad_clip = 0.0  # > 0: clip the global gradient norm first (0: no clip)
  config.learning_rates = ml_collections.ConfigDict({"weights": 0.01, "aux": 0.01, "dual": 0.01})
  # every rate x factor every every_epochs epochs ("step"; AlexNet: 0.1 every 30)
  config.lr_schedule = ml_collections.ConfigDict(
    {"kind": "constant", "every_epochs": 30.0, "factor": 0.1}
  )
  config.penalty = 1.0  # c of the penalty / augmented-Lagrangian methods (docstring above)
  config.multiplier_every = 1  # the method of multipliers: lambda += c g every this many steps


def distprop(config: ml_collections.ConfigDict) -> None:
  """DistProp's options (``config.distprop``), read by ``methods/distprop``."""
  d = config.distprop = ml_collections.ConfigDict()
  d.margin = 0.1  # epsilon of eq. 3's band
  d.samples_per_class = 32  # Gaussian samples per class and block
  d.noise = "fixed"  # fixed (one snapshot) | per_step (Algorithm 1's eps_k)
  d.sigma_floor = 1e-2  # sigma's lower bound
  d.shrinkage = "soft"  # eq. 3 as written; "hard" as in the authors' later code
  d.multipliers = "class"  # class | example | l1
  d.augmented_coefficient = 3.0  # c of c/2 mean_i |g_i|^2 added to the Lagrangian
  d.prototype_init = "sphere"  # sphere (paper) | data (class statistics of f0)
  d.prototype_scale = 1.0  # RMS per coordinate; the paper's unit sphere is 1/sqrt(H)
  d.sigma_init = 1.0  # for "sphere"
  d.sigma_learning_rate_scale = 1.0  # sigma's rate = aux rate x this (0: fixed)
  d.init_examples = 10_000  # examples used by prototype_init="data"
  # none | forward: blocks after the first also learn on the real batch's activations
  # (a detached forward pass, no backward through blocks; configs/deep_mlp_distprop.py)
  d.real_inputs = "none"
  # real_inputs="local" (methods/distprop/terms.py, local_loss): each block's local loss
  # weight, its prototype logits' temperature, the steps its weight ramps up over from 0,
  # the steps before that ramp starts (the real terms off)
  d.local_weight = 1.0
  d.local_temperature = 1.0
  d.local_warmup = 0
  d.local_start = 0
  # what classifies each split's real activation in its local loss: the split's Gaussians
  # (prototypes) or a learned linear read-out per split (linear: decoupled greedy
  # learning's auxiliary classifier; methods/distprop/terms.py, local_loss)
  d.local_head = "prototypes"
  # Gaussians per class at every split (K): block 0 maps each real example into the most
  # likely of its class's K, the last block classifies all K as the class
  # (methods/distprop/terms.py, components_of; configs/deep_mlp_distprop.py)
  d.components = 1
  # block 0's margin (eq. 3's band on the real data), when it differs (< 0: margin's)
  d.first_margin = -1.0
  # share of each class's samples moved t ~ U(0, 1/2) of the way to another class's
  # Gaussian, with the same mixture as target (0: off; configs/deep_mlp_distprop.py)
  d.mix_fraction = 0.0
  d.mix_targets = "own"  # own (the own class: snap) | mixed (the same mixture)
  # how the blocks are laid out: auto (stage-parallel when mesh.stage > 1, else the
  # sequential code) | sequential | stacked | slots (the stage-parallel layouts)
  d.block_layout = "auto"
  # the sequential code's gradient: by_block (each block's term in turn: one block's
  # activations in memory at a time; the same gradient) | whole (jax.value_and_grad of
  # the sum: every block's activations at once)
  d.gradient = "by_block"
  # the noise's generator: auto (per_step: the fused Threefry hash of
  # lagrangian_jax/threefry.py, 1.5x faster on CPU; fixed: jax.random, drawn once) |
  # hash | jax (jax.random.normal: per-step figures before the hash)
  d.noise_rng = "auto"
  # how many normals per iteration: auto (per_step: pooled; fixed: per_split) |
  # per_split (each split its own draw) | pooled (one draw of the largest split's size,
  # each split a random rotation and sign flip of it: its entries still i.i.d. normal;
  # terms.pooled_draw)
  d.noise_draws = "auto"


def lifted(config: ml_collections.ConfigDict) -> None:
  """The lifted methods' options (``config.lifted``: ExtraProp, GDA, the penalty and the
  augmented Lagrangian, ``methods/lifted.py``)."""
  d = config.lifted = ml_collections.ConfigDict()
  # eq. 3's epsilon on g = h - f(h_prev) (0: g itself, today's arithmetic); the authors'
  # code: 0.44 ExtraProp, 0.966 GDA, 0.10 penalty, soft shrinkage (softshrink)
  d.band = 0.0
  d.shrinkage = "soft"  # soft (eq. 3 as written) | hard (g outside the band)


def network(config: ml_collections.ConfigDict) -> None:
  """The network and where it splits into blocks (``lagrangian_jax.networks``)."""
  n = config.network = ml_collections.ConfigDict()
  n.name = "mnist_cnn"  # one of networks.NETWORK_NAMES
  n.split = "default"  # default | every | "2" | "1,2"
  n.first_split = 1  # split="every": the first split comes after this many blocks
  n.split_activation = "identity"  # identity (the ReLU at a split removed) | relu | deferred
  n.conv_impl = "auto"  # auto (rows on CPU, xla elsewhere) | xla | patches | rows
  n.depth = 0  # mlp only: hidden layers
  n.width = 0  # mlp only: units per hidden layer
  # kernel initialiser of every Dense/Conv: lecun_normal (flax's default) | he_normal
  # (variance 2/fan_in: keeps ReLU activations' scale at depth; configs/deep_mlp_*.py)
  n.init = "lecun_normal"
  # dropout rate before AlexNet's first two classifier layers (alexnet only; the methods
  # that apply dropout apply it in training, keyed by (seed, step, segment))
  n.dropout = 0.0
  # what the network computes in: float32 | bfloat16 (activations, matmuls and convolutions;
  # parameters, optimizer and solver states, losses and reductions stay float32)
  config.dtype = "float32"


def data(config: ml_collections.ConfigDict) -> None:
  """The data set and its input pipeline (``lagrangian_jax.data``)."""
  d = config.data = ml_collections.ConfigDict()
  d.name = "mnist_5k"  # mnist_5k (embedded) | fashion_mnist | idx:<dir> | tfds:<name>
  d.data_dir = ""  # where idx / tfds data sets live ('' : the library's default)
  d.validation_fraction = 0.1  # share of the training split held out for validation
  d.seed = 0  # seed of that hold-out draw
  d.image_size = 0  # > 0: resize images to this side
  d.max_train_examples = 0  # > 0: keep only this many training examples
  # > 0: the class count, every label checked to lie below it (0: the data set's own; IDX
  # files: the largest training label + 1, every class below it with a training example)
  d.num_classes = 0
  d.pipeline = "memory"  # memory | grain (tfds data sets read from disk by workers)
  d.workers = -1  # grain worker processes (-1: sized to the host; 0: threads of each process)
  d.prefetch = 2  # grain: steps prepared ahead per worker (or process)
  d.augment = "none"  # none | crop_flip (grain: random crop + horizontal flip)


def mesh(config: ml_collections.ConfigDict) -> None:
  """The device mesh: num_devices in all (-1: every device); data x stage of them (-1:
  the rest). ``stage > 1`` runs DistProp's blocks on stages (``distprop.block_layout``)."""
  config.mesh = ml_collections.ConfigDict({"num_devices": -1, "data": -1, "stage": 1})


def loop(config: ml_collections.ConfigDict) -> None:
  """The training loop: seeds, budget, cadences, evaluation (``lagrangian_jax.train``)."""
  config.seed = 0
  config.num_seeds = 1  # seeds seed .. seed + N - 1 in one vmapped program
  config.average_decay = 0.0  # > 0: evaluate an EMA of the iterate's weights
  config.batch_size = 128  # the global batch (all hosts' devices); 0: per-device instead
  # > 0 (with batch_size 0): the global batch is this x the mesh's data axis (all hosts)
  config.per_device_batch_size = 0
  config.num_steps = 700
  config.log_every = 50
  config.eval_every = 100
  config.checkpoint_every = 100
  config.keep_checkpoints = 2  # checkpoints kept on disk
  # a logged |loss| or |objective| above this stops the run as a non-finite one does (the
  # last good checkpoint kept): a finite blow-up is a divergence too. 0: no threshold
  config.divergence_threshold = 1e10
  config.eval_batch_size = 500
  config.eval_train_examples = 5000  # training examples the training accuracy / defect read
  # what each evaluation computes, comma-separated: accuracy, defects, split_diagnostics
  # (DistProp's per-split diagnostics on the validation split, in summary.json)
  config.evaluators = "accuracy,defects"
  config.progress_bar = True
  # "start,stop": a jax.profiler trace of steps start..stop to <workdir>/profile; "": off
  config.profile_steps = ""
  # a folder (local or gs://) for JAX's persistent compilation cache; "": off
  config.compilation_cache_dir = ""
  # keys (or sections, e.g. "learning_rates") a resume may change from the run's record,
  # comma-separated; every other key of the run's identity must match (identity.py)
  config.allow_changes = ""


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  for section in (solver, distprop, lifted, network, data, mesh, loop):
    section(config)
  return config
