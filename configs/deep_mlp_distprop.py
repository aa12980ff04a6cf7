"""DistProp on a deep plain MLP (no residuals, no normalisation), every layer a block.

Run (depth is ``config.network.depth``, hidden layers of width 128):
  python -m experiments.main --config=configs/deep_mlp_distprop.py --workdir=runs/deep_dp \
    --config.network.depth=64
All depths next to backprop: ``python -m experiments.depth`` (measured figures there).

What differs from ``configs/default.py`` and why (validation accuracy, seed 0, 700 steps,
depth 64 unless said; per-split diagnostics from ``distprop.make_split_diagnostics``):

* ``split_activation="deferred"``: with ``"identity"`` at every split the MLP has no ReLU
  left, a linear network. Deferred keeps the network's function (the ReLU opens the next
  block, prototypes live in pre-activation space). Depth 16: test 0.795 -> 0.838.
* ``noise="per_step"``: with one fixed snapshot every block sees the same 32 samples per
  class forever and maps real activations, which leave those few points, further off at
  every split (real nearest-prototype accuracy 0.87 at split 0 -> 0.41 at split 63; test
  0.433); fresh samples each step: 0.87 -> 0.80, test 0.770.
* ``mix_fraction=0.5`` with ``mix_targets="own"``: half of each class's samples are moved
  ``t ~ U(0, 1/2)`` of the way to another class's Gaussian and must still land in their
  own class's band, so each block learns to snap inputs *between* the Gaussians (where
  ambiguous real digits lie, and no Gaussian sample does) back to the nearer class; the
  real chain's z-score stops growing with depth. Depth 32: validation 0.842 -> 0.848;
  depth 64: 0.780 -> 0.822. Soft targets (``mix_targets="mixed"``) were worse (0.198).
* ``learning_rates.weights=0.03``: at 0.01 the 64-block chain is still converging at
  step 700 (validation 0.55 at step 350); at 0.03 it is at 0.842 by step 350 and 0.842 at
  700 (test 0.837), the real chain's nearest-prototype accuracy flat from split 0 (0.856)
  to split 63 (0.848).
"""

from configs import default


def get_config():
  config = default.get_config()  # DistProp's defaults (ExtraAdagrad, margin, prototypes)
  config.network.name = "mlp"
  config.network.width = 128
  config.network.depth = 16
  config.network.split = "every"
  config.network.split_activation = "deferred"  # keep the MLP's ReLUs (identity: linear)
  config.distprop.noise = "per_step"
  config.distprop.mix_fraction = 0.5
  config.distprop.mix_targets = "own"
  config.learning_rates.weights = 0.03
  return config
