"""DistProp on a deep plain MLP (no residuals, no normalisation), every layer a block.

Run (depth is ``config.network.depth``, hidden layers of width 128):
  python -m experiments.main --config=configs/deep_mlp_distprop.py --workdir=runs/deep_dp \
    --config.network.depth=64
All depths next to backprop: ``python -m experiments.depth`` (its docstring has the table).
Stage-parallel (each block on its stage of the mesh, all blocks' terms at once; the same
iterates, ``lagrangian_jax/methods/distprop/stage_parallel.py``), e.g. on 4 devices:
  python -m experiments.main --config=configs/deep_mlp_distprop.py --workdir=runs/deep_sp \
    --config.network.depth=64 --config.mesh.stage=4
(on CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` gives 4 devices).

What differs from ``configs/default.py``, and why. Depth 64, 700 steps, 3 seeds, mean test
accuracy (validation in parentheses), each line adding one change to the one above; per
split figures from ``distprop.make_split_diagnostics`` on the validation digits, "real
chain" = nearest-prototype accuracy of the real activations at splits 0 / 32 / 63.
Command: ``python -m experiments.depth --depths=64 --seeds=3 --methods=distprop
--workdir=DIR --set=KEYS`` with KEYS undoing the later changes (see the report of issue 8).

* defaults (``split_activation="identity"``, fixed noise): 0.135 (0.125); real chain
  0.866 / 0.664 / 0.129. ``"identity"`` at every split removes every ReLU: a linear net.
* ``split_activation="deferred"`` (the ReLU opens the next block: the MLP's function,
  prototypes in pre-activation space): 0.338 (0.335); real chain 0.867 / 0.769 / 0.359.
* ``noise="per_step"``: with one fixed snapshot every block only ever sees the same 32
  samples per class; fresh ones each step: 0.731 (0.752); 0.867 / 0.830 / 0.767.
* ``mix_fraction=0.5``, ``mix_targets="own"``: half of each class's samples are moved
  ``t ~ U(0, 1/2)`` of the way to another class's Gaussian and must still land in their
  own band, so each block learns to snap inputs *between* the Gaussians (where ambiguous
  real digits lie and no Gaussian sample does) back to the nearer class; the real chain's
  RMS z-score stops growing (0.55 / 0.53 / 0.53): 0.775 (0.805); 0.867 / 0.841 / 0.817.
* ``learning_rates.weights=0.03``: at 0.01 the 64-block chain is still converging at
  step 700: 0.824 (0.840); real chain 0.859 / 0.844 / 0.845, flat.

The lines above ran flax's default lecun-normal kernels. ``network.init="he_normal"`` is
the backprop baseline's (``configs/deep_mlp_backprop.py``: the one that does not collapse
it), so that both start from the same weights; it changes DistProp little. Test accuracy
(validation), 3 seeds, ``python -m experiments.depth --depths=4,16,32,64,100 --seeds=3
--steps=700 --workdir=DIR --set=network.init=he_normal`` vs the lecun run:

  depth         4              16             32             64             100
  he_normal     0.832 (0.845)  0.830 (0.849)  0.825 (0.845)  0.823 (0.843)  0.821 (0.840)
  lecun_normal  0.832 (0.848)  0.833 (0.847)  0.827 (0.845)  0.824 (0.840)  0.820 (0.838)

Issue 24 (depth buys nothing: only block 0 sees data). Depth 16, 700 steps, seed 0,
validation accuracy (test in parentheses), this config plus ``--set=KEYS``; command
``python -m experiments.depth --depths=16 --seeds=1 --steps=700 --methods=distprop
--workdir=DIR --set=KEYS`` (``local`` is ``distprop.real_inputs=local``, ``m`` is
``distprop.margin``, ``W`` ``distprop.local_warmup``, ``S`` ``distprop.local_start``):

  KEYS                                                     validation (test)
  (none: this config)                                      0.852 (0.840)
  distprop.real_inputs=forward                             0.158 (0.151)
  forward, grad_clip=1                                     0.09 at step 200 (stopped)
  local                                                    0.850 (0.848)
  local, local_weight=0.1                                  0.844 (0.835)
  local, local_temperature=128 (mean, not sum, of z^2)     0.844 (0.839)
  local, W=100                                             0.858 (0.855)
  local, W=100, local_weight=10                            0.32 at step 400 (stopped)
  local, W=100, m=1                                        0.882 (0.869)
  local, W=100, m=3                                        0.49 at step 500 (stopped)
  local, W=100, m=1, mix_fraction=0                        0.880 (0.859)
  local, W=100, m=1, learning_rates.weights=0.01           0.840 (0.821)
  local, S=50, W=50, m=1                                   0.866 (0.846)
  local, S=100, W=100, m=1                                 0.860 (0.847)
  m=1 alone (no local)                                     0.824 (0.822)
  blocks of 4 layers (network.split=(4, 8, 12))            0.632 (0.629)
  blocks of 4 layers, local, W=100                         0.822 (0.812)
  blocks of 4 layers, local, W=100, m=1 (stop 33)          0.660 (0.639)
  local, W=100, m=1, augmented_coefficient=0 (stop 33)     0.642 (0.643)
  local, W=100, m=1, local_weight=3 (stop 33)              0.868 (0.855)
  local, W=100, m=2 (stop 33)                              0.750 (0.675)
  local, W=100, m=100: no constraint binds (stop 33)       0.470 (0.477)
  local, W=100, m=1, first_margin=100 (stop 34)            0.826 (0.809)
  local, W=100, m=1, first_margin=3 (stop 34)              0.798 (0.781)

(``distprop.first_margin``: block 0's band on the real digits alone, so that split 0 keeps
what the local loss finds without pulling each digit to its mean; the real chain reads
0.868 / 0.836 / 0.820 and 0.862 / 0.812 / 0.816 at splits 0 / 8 / 15, no better at split 0,
and with ``first_margin=100`` the digits' RMS z-score at split 0 is 1.99: block 1 then
reads inputs far from the Gaussians it learned on.) (The stop-33 rows ran ``python -m experiments.main --config=configs/deep_mlp_distprop.py
--workdir=DIR --config.num_steps=700`` with the keys as ``--config.distprop.KEY=...``;
that launch of ``local, W=100, m=1`` gives 0.878 (0.865) where the depth cell gave 0.882
(0.869).)

``forward`` fails because Adagrad's first steps move every weight by about its rate
(a fifth of a He weight's RMS): harmless to the synthetic terms, but the real chain
compounds 16 such moves and blows up (defect 1.2 -> 1700 at step 1), and its squared
gradients freeze the deep blocks' accumulators (package docstring). ``local`` (each
block's real output classified by its split's Gaussians, ``terms.local_loss``) learns;
with the margin at 1 the band leaves the real activations room to keep what the next
block needs (the margin alone loses 3 points). The winner, 3 seeds,
``--set=distprop.real_inputs=local,distprop.local_warmup=100,distprop.margin=1.0``:
depth 16 0.857 ± 0.009 test (0.871 validation) against this config's 0.830 (0.849); the
real chain's nearest-prototype accuracy is 0.883 at split 0 and 0.877 at split 15
(``depth_real_chain.png``): the local losses make every split as good as the first, not
better, so depth still buys nothing. With ``distprop.local_start=100`` added (the real
terms off for 100 steps, then the ramp): 0.841 ± 0.004 (0.861), 3 seeds. At depth 64
(``--depths=64``, seed 0) ``local, W=100, m=1`` diverges at step 50 (the blown-up chain:
objective 8e11), and ``local, S=100, W=100, m=1`` stays at chance (0.098 validation at
step 300, the last block's real loss log 10: stopped); at this config's margin,
``local, S=100, W=100`` gives 0.844 (0.850) against this config's 0.823 (0.843, 3 seeds;
real chain 0.872 at split 0, 0.858 at split 63).
What caps it (``docs/depth/README.md``, "What limits depth"): probes of the real activations
(``python -m experiments.split_probes``, seed 0, validation, MLP probe) read 0.896 at split 0
of this config and 0.912 with ``local``, against 0.950 from the pixels and 0.944 at
backprop's first layer; no later split reads more, and without the constraints
(``local``, ``m=100``: 0.477 test) split 0 keeps 0.932 but every later block loses some
(0.682 at split 15). One Gaussian per class as every block's target discards what the
later blocks would need.
It stays off here: the stage-parallel code refuses it (a sequential pass of the batch
through every block) and it takes the whole-objective gradient, not the block-by-block
one.

Every figure above drew its per-step noise with ``jax.random``, a draw per split (before
``distprop.noise_rng`` and ``distprop.noise_draws``):
``--set=distprop.noise_rng=jax,distprop.noise_draws=per_split`` reproduces them. The
default draws one pool per iteration from the fused hash of ``lagrangian_jax/threefry.py``
and gives each split a random rotation and sign flip of it (``terms.pooled_draw``); rerun
(``docs/depth/``, 3 seeds, 700 steps): 0.833 / 0.830 / 0.826 / 0.823 / 0.822 test at depths
4 / 16 / 32 / 64 / 100, against 0.832 / 0.830 / 0.825 / 0.823 / 0.821 above.

Several Gaussians per class (``distprop.components = K``, stop 34: block 0 maps each digit
into the likelier of its class's ``K`` Gaussians, ``terms.components_of``; ``S`` is
``distprop.samples_per_class``, now per Gaussian). Depth 16, seed 0, the
``experiments.depth`` command above (the default pooled noise), validation (test), the
real chain at splits 0 / 8 / 15 and the inner blocks' mean sample defect:

  KEYS                                   validation (test)  real chain             defect
  (none: this config, docs/depth/)       0.848 (0.845)      0.856 / 0.850 / 0.850  0.15
  components=2, S=16 (320 rows)          0.832 (0.799)      0.876 / 0.834 / 0.766  0.22
  components=2, S=32                     0.828 (0.792)      0.876 / 0.832 / 0.766  0.22
  components=4, S=8                      0.102 (0.097)      0.856 / 0.332 / 0.102  0.31
  components=4, S=32                     0.102 (0.097)      0.858 / 0.340 / 0.102  0.30
  components=10, S=8                     0.100 (0.118)      0.852 / 0.106 / 0.090  0.41
  local, W=100, m=1, components=2, S=16  0.118 (0.120)      0.886 / 0.848 / 0.118  0.06
  local, W=100, m=1, components=4, S=8   0.102 (0.097)      0.884 / 0.088 / 0.102  0.10

(with ``local`` a class's posterior is the mixture of its ``K`` Gaussians). Split 0 gains
at most 2 points of nearest-prototype accuracy, and the probes of the ``components=2, S=16``
run (``experiments.split_probes``) read 0.868 / 0.886 at split 0 against this config's
0.882 / 0.896: two Gaussians per class keep no more of the digits than one. What they
cost is the chain: an inner block must now send ``C K`` Gaussians onto ``C K`` others, each
within its band, and the means span ``C K`` of the split's 128 directions, along which the
block must pass the means but shrink the noise; its samples' defect grows with ``K``
(0.15, 0.22, 0.30, 0.41 for ``K`` = 1, 2, 4, 10) and the real chain drifts off the
Gaussians until it carries nothing (``K >= 4``). So the class target's information loss
is not the count of Gaussians: block 0's objective (every digit pulled to a mean) is.
``components`` stays 1 here.

A first block of several layers (``network.first_split = k``, stop 35: ``split="every"``
after block ``k``, so block 0 is ``k`` dense layers with their ReLUs and reads the pixels
nonlinearly; every later layer stays a block of its own). Depth 16, the ``experiments.depth``
command above, validation (test), the real chain's nearest-prototype accuracy at the first /
middle / last split; one seed unless said:

  KEYS                                           validation (test)  real chain
  (none: first_split=1, docs/depth/ before)     0.846 (0.830 ± 0.010)  0.856 / 0.845 / 0.847
  first_split=2, 3 seeds                         0.920 (0.898 ± 0.001)  0.929 / 0.922 / 0.921
  first_split=2, 1,400 steps                     0.908 (0.894)      0.922 / 0.908 / 0.910
  first_split=2, learning_rates.weights=0.01     0.918 (0.903)      0.928 / 0.922 / 0.920
  first_split=2, margin=0.03                     0.920 (0.894)      0.922 / 0.918 / 0.920
  first_split=2, samples_per_class=64            0.906 (0.895)      0.908 / 0.906 / 0.908
  first_split=2, prototype_init=data             0.104 (0.104)      0.810 / 0.036 / 0.104
  first_split=2, local, W=100                    0.928 (0.902)      0.926 / 0.928 / 0.930
  first_split=2, local, W=100, 3 seeds           0.921 (0.902 ± 0.002)  0.925 / 0.923 / 0.922
  first_split=2, local, W=100, m=1               0.924 (0.879)      0.928 / 0.922 / 0.924
  first_split=2, local, W=100, local_head=linear 0.926 (0.901)      0.920 / 0.920 / 0.924
  the same, 3 seeds                              0.923 (0.896 ± 0.002)  0.924 / 0.922 / 0.921
  first_split=3, 3 seeds                         0.890 (0.864 ± 0.029)  0.888 / 0.889 / 0.886
  first_split=3 (seed 0 of those)                0.924 (0.901)      0.924 / 0.926 / 0.924
  first_split=3, learning_rates.weights=0.01     0.906 (0.913)      0.912 / 0.908 / 0.906
  first_split=3, margin=0.3                      0.918 (0.889)      0.916 / 0.914 / 0.918
  first_split=3, sigma_learning_rate_scale=0     0.918 (0.901)      0.918 / 0.916 / 0.918
  first_split=3, local, W=100, 3 seeds           0.771 (0.751)      by seed 0.930 / 0.478 / 0.904
  first_split=3, local, W=100, m=1               0.832 (0.804)      0.854 / 0.840 / 0.852
  first_split=4                                  0.706 (0.680)      0.742 / 0.686 / 0.696
  first_split=3, depth 64                        0.926 (0.902)      0.922 / 0.926 / 0.926

(the ``first_split`` rows of stop 35's first runs spelled it ``network.split=k,...,16``:
the same network and parameters, ``tests/test_networks.py``.) Two layers are the robust
choice (seeds 0.899 / 0.899 / 0.896 test; the local losses beside them add 0.001 of
validation over 3 seeds, 0.003 with linear read-outs, not worth the whole-objective
gradient and the stage-parallel refusal they bring): 6.8 points over one layer's 0.830,
and the chain then relays split 0 losslessly at any depth (0.92 at splits 0, 7 and 14; at
depth 64 too).
Three layers reach the same on seed 0 but not on seeds 1 and 2 (their split 0 reads 0.85 and
0.89: the 3-layer block is still learning at step 700, 0.827 -> 0.864 over the last 200
steps), four fall behind one (0.742 at split 0). What caps two: probes of split 0
(``experiments.split_probes``, seed 0) read 0.916 linear / 0.906 MLP, under the pixels'
0.950 and backprop's first layer's 0.944, and 1,400 steps do not raise it, so the block's
target (every digit pulled to its class's mean) still discards what a classifier keeps;
block 0's own band does not either (``first_margin=0.5``: 0.922 (0.905), real chain 0.922 /
0.920 / 0.922; ``first_margin=2``: 0.324 (0.322), the digits left too far from the
Gaussians the inner blocks learned on). ``first_split = 2`` is this config's since stop 35.
At depths 4 / 16 / 32 / 64 / 100, 3 seeds (``docs/depth/``): 0.895 / 0.898 / 0.895 / 0.895 /
0.895 test (0.920 / 0.920 / 0.920 / 0.919 / 0.917).
The local losses with a learned linear read-out per split instead of the Gaussians
(``distprop.local_head="linear"``, decoupled greedy learning's classifier, stop 35; with one
layer in block 0, ``local, W=100``): m=1 0.840 (0.833); m=100, the constraints never
binding, 0.848 (0.834), the local objectives alone training unsteadily (their mean loss
0.54 -> 3.37 -> 0.42 at steps 200 / 300 / 400); m=1 with ``first_margin=100`` 0.068
(0.069): block 0 then leaves the Gaussians, and the inner blocks, trained on samples of
them, read inputs they never saw.
"""

from configs import base


def get_config():
  config = base.get_config()  # DistProp's defaults (ExtraAdagrad, margin, prototypes)
  config.method = "distprop"  # without configs/default.py's clip: measured on the MNIST CNN only
  config.network.name = "mlp"
  config.network.width = 128
  config.network.depth = 16
  config.network.split = "every"
  config.network.split_activation = "deferred"  # keep the MLP's ReLUs (identity: linear)
  config.network.first_split = 2  # block 0: two layers, then a block per layer (docstring)
  config.distprop.noise = "per_step"
  config.distprop.mix_fraction = 0.5
  config.distprop.mix_targets = "own"
  config.learning_rates.weights = 0.03
  config.network.init = "he_normal"  # as configs/deep_mlp_backprop.py (its docstring: why)
  return config
