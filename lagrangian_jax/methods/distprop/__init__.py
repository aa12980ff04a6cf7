r"""DistProp: per-class Gaussians replace per-example states (paper Section 3, Algorithm 1).

For every split ``l`` and class ``c`` a Gaussian with mean ``mu_l[c]`` and scale
``sigma_l[c] = softplus(rho_l[c]) + sigma_floor`` (the floor keeps z-scores finite).
Noise ``eps_l`` of shape ``(S, C, *state_shape)`` (derandomisation by reparametrisation)
gives ``S`` synthetic states per class, ``s_l = mu_l + eps_l * sigma_l``, identical at
the extrapolation and the update (``config.distprop.noise``):
  * ``"fixed"``: one snapshot drawn at initialisation (Section 3.1's "fixed snapshot");
    the blocks after a split only ever see those ``S x C`` inputs.
  * ``"per_step"``: ``eps_k`` drawn for every iteration ``k``, as Algorithm 1 has it: a
    pure function of the seed and the step (the same at both half-steps, and on resume).
    By default (``distprop.noise_draws="pooled"``) one pool of the largest split's size
    is drawn per iteration and each split reads it rotated and sign-flipped
    (``terms.pooled_draw``): every split's entries are i.i.d. normal and every term's
    expectation is that of independent draws, at a sixty-fourth of the normals at depth
    64 (``"per_split"``: an independent draw per split).

Constraints (Algorithm 1's dataset projection ``g_0`` and its synthetic-state
constraints for later splits), made epsilon-insensitive with the margin ``m`` (eq. 3):

.. math::
  g_0^{(i)} = \mathrm{shrink}_m\!\left(\frac{f_0(x_i) - \mu_0[y_i]}{\sigma_0[y_i]}\right),
  \qquad
  g_l^{(s,c)} = \mathrm{shrink}_m\!\left(\frac{f_l(s_{l-1}^{(s,c)}) - \mu_l[c]}{\sigma_l[c]}\right)

and the Lagrangian of eq. 1 over these constraints, built with
``formulations.lagrangian`` (or ``augmented_lagrangian`` when ``c_aug > 0``,
``config.distprop.augmented_coefficient``) with
``reduction="batch_mean"``: means over the batch and over the ``S x C`` samples, so
learning rates do not depend on the batch size or the number of classes:

.. math::
  L = \frac{1}{SC}\sum_{s,c} \ell(f_L(s_{L-1}^{(s,c)}), c)
      + \frac1B\sum_i \langle\lambda_0[y_i], g_0^{(i)}\rangle
      + \sum_{l\ge1}\frac{1}{SC}\sum_{s,c}\langle\lambda_l[c], g_l^{(s,c)}\rangle
      \;\left[+\ \tfrac{c_{aug}}{2}\,\text{the same means of } |g|^2\right]

The loss scores the last segment on synthetic samples against their class (softmax over
the logits axis); it never reaches ``f_0``, which learns only through its constraint.

Multipliers (``config.distprop.multipliers``):
  * ``"class"`` (default): ``lambda_0`` is ``(C, *H)``; nothing grows with the data set.
  * ``"example"``: ``lambda_0`` is a per-example table ``(N, *H)`` (the authors' code).
  * ``"l1"``: one multiplier per example for the scalar constraint of the ImageNet
    experiment, ``relu(mean_j |z_j| - m)``. We use the mean absolute *z-score* rather
    than the paper's raw L1 distance so that the margin means the same thing as in the
    element-wise constraint (same feasible set up to the scale of ``m``).

Initialisation (``prototype_init``): ``"sphere"`` (default) draws the means uniformly
on a sphere of radius ``prototype_scale * sqrt(H)`` (``prototype_scale`` is the RMS per
coordinate; the paper's unit sphere is ``1/sqrt(H)``) with ``sigma = sigma_init``, so the
classes are distinguishable from the start; ``"data"`` sets ``mu_0[c]``, ``sigma_0[c]``
to the class mean and standard deviation of ``f_0(x)`` under the initial weights (and
``mu_l, sigma_l`` of later splits to the statistics of ``f_l`` on the initial samples),
i.e. a valid solution. ``sigma`` has its own learning-rate group (``sigma`` =
``aux`` rate x ``sigma_learning_rate_scale``).

Depth (``configs/deep_mlp_distprop.py``, ``experiments/depth.py``). A block after the
first is trained only on samples of the Gaussians before it; at test time it sees the
real chain ``f_{l-1}(...f_0(x))``, whose ambiguous digits lie *between* the Gaussians,
where no sample does, so each block moves them somewhere untrained and the error grows
with the number of splits. ``make_split_diagnostics`` measures that per split (real
activations vs samples: defect, z-score, nearest-prototype accuracy, Fisher ratio, how
often a block changes the real chain's nearest class). Two remedies, both off by default
(the default objective is unchanged, bit for bit):
  * ``mix_fraction = q > 0``: a share ``q`` of each class's ``S`` samples is moved
    ``t ~ U(0, 1/2)`` of the way to another class ``b`` (mean and scale
    ``(1 - t) mu[c] + t mu[b]``, same for sigma; drawn with the noise, so fixed or per
    step like it) and, with ``mix_targets="own"`` (the default), must still land in its
    own class's band (and be classified as ``c`` by the last block): each block learns to
    snap inputs between the Gaussians back to the nearer class. ``"mixed"`` targets the
    same mixture of the next Gaussians (and soft labels), i.e. an affine relay. Costs no
    data and no extra sample: the blocks stay as decoupled as before.
  * ``real_inputs = "forward"``: blocks ``l >= 1`` also map the batch's real activation of
    split ``l - 1`` into its label's band (class multipliers shared with the samples) and
    the last block classifies it. The activations come from a forward pass of the batch
    through every block at the current iterate, detached at each block
    (``stop_gradient``): no backward through blocks, but one sequential forward pass per
    gradient evaluation (backprop's forward FLOPs); it could be a step stale (the previous
    iteration's pass) to pipeline the blocks. Measured on the deep MLP (depth 16) it
    breaks training, 0.151 test: Adagrad's first steps move every weight by about its
    rate (0.03 against a He weight's RMS of 0.125: a fifth of every block's weights);
    the synthetic terms do not mind (each block's input is a Gaussian, not the blocks
    before it), but the real chain compounds the 16 moves: at step 1 its defect is
    1700 (1.2 at step 0), its loss 1.4e4. Those gradients, squared, fill Adagrad's
    accumulators, and the deep blocks' Gaussians stop moving for good (``mu_15`` moves
    1e-5 of its norm per step at step 1, its scales 1e-8; they end at ``sigma = 1.006``,
    their initial value): the real chain's nearest-prototype accuracy falls from 0.856 at
    split 0 to chance at split 15.
  * ``real_inputs = "local"``: each block's real output is classified by the Gaussians of
    its split (decoupled greedy learning's auxiliary loss with the prototypes as the
    classifier, no extra parameters): block 0's on the batch, block ``l``'s on the
    detached real activation of split ``l - 1``, with the posterior of the split's
    Gaussians, ``softmax_c(-|z_c|^2 / 2 - sum log sigma_c) / T`` (``terms.local_loss``,
    ``T = local_temperature``), weighted ``local_weight``; the last block classifies the
    real chain. No gradient crosses a split. ``local_warmup`` ramps the real terms up from
    0 over its steps, so that the chain the first Adagrad steps blow up (above) does not
    fill the accumulators. The constraints keep each block a map of Gaussians; the local
    loss makes the real activations separable by them.
  * ``components = K > 1``: ``K`` Gaussians per class at every split (Gaussian ``j`` of
    class ``j // K``; ``S`` samples each). Block 0 maps each example into the likelier
    of its class's ``K`` (``terms.components_of``, a hard assignment held fixed, as
    k-means'), the inner blocks map each Gaussian onto its namesake, the last block
    classifies every Gaussian's samples as its class, and the local losses score a class
    by the mixture of its ``K``. Measured at depth 16 it keeps no more of the digits at
    split 0 and the chain fits worse (``configs/deep_mlp_distprop.py``).

Where each piece lives (one definition each):
  * ``options``: ``config.distprop.*`` read and checked once (:func:`options.parse`).
  * ``terms``: the equations: the draws (``noise_draw``, ``mix_draw``, ``step_key``), the
    samples ``s = mu + eps sigma`` (``block_input``), eq. 3's constraint
    (``z_score``, ``constraint``), each block's term (``first_constraint``,
    ``block_constraint``, ``last_loss``), their multiplier rows and eq. 1's
    Lagrangian (``lagrangian``).
  * ``sequential``: the method, Algorithm 1's objective as the sum of the terms.
  * ``layout`` and ``stage_parallel``: the same terms placed on the stages of a mesh
    (``config.distprop.block_layout``, ``config.mesh.stage``).
  * ``diagnostics``: per-split real vs synthetic figures (:func:`make_split_diagnostics`).

Example:
  >>> import jax
  >>> from configs import deep_mlp_distprop
  >>> from lagrangian_jax import networks
  >>> config = deep_mlp_distprop.get_config(); config.network.depth = 2
  >>> net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
  >>> params, constants = make(config, net, num_train=100).init(jax.random.key(0), None)
  >>> sorted(constants)  # per_step noise: the key of the draws
  ['noise_key']
"""

from lagrangian_jax.methods.distprop import diagnostics
from lagrangian_jax.methods.distprop import layout
from lagrangian_jax.methods.distprop import options
from lagrangian_jax.methods.distprop import sequential
from lagrangian_jax.methods.distprop import stage_parallel
from lagrangian_jax.methods.distprop import terms
from lagrangian_jax.methods.distprop.diagnostics import DIAGNOSTICS
from lagrangian_jax.methods.distprop.diagnostics import make_split_diagnostics
from lagrangian_jax.methods.distprop.diagnostics import split_diagnostics
from lagrangian_jax.methods.distprop.layout import layout_for
from lagrangian_jax.methods.distprop.sequential import make
from lagrangian_jax.methods.distprop.stage_parallel import for_mesh
from lagrangian_jax.methods.distprop.terms import mix_draw
from lagrangian_jax.methods.distprop.terms import mixed
from lagrangian_jax.methods.distprop.terms import noise_draw

__all__ = [
  "DIAGNOSTICS",
  "diagnostics",
  "for_mesh",
  "layout",
  "layout_for",
  "make",
  "make_split_diagnostics",
  "mix_draw",
  "mixed",
  "noise_draw",
  "options",
  "sequential",
  "split_diagnostics",
  "stage_parallel",
  "terms",
]
