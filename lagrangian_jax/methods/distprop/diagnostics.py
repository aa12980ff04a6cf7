"""Per-split diagnostics of DistProp: real activations against the synthetic samples.

A block after the first is trained only on samples of the Gaussians before it; at test
time it sees the real chain (package docstring, "Depth"). These figures measure, split
by split, how far the real activations are from the Gaussians the blocks trained on,
with the same constraint as training (``terms.z_score``, ``terms.constraint``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lagrangian_jax import networks
from lagrangian_jax.methods.distprop import options
from lagrangian_jax.methods.distprop import terms

DIAGNOSTICS = (
  "real_defect",
  "sample_defect",
  "real_rms_z",
  "sample_rms_z",
  "real_prototype_accuracy",
  "sample_prototype_accuracy",
  "real_fisher",
  "sample_fisher",
  "real_agreement",
  "sigma_rms",
  "prototype_distance",
)


def make_split_diagnostics(config, net: networks.SplitNetwork):
  """A jitted ``fn(params, constants, images, labels, step=0) -> dict`` of per-split arrays.

  For one seed's ``params`` (the iterate) and real examples ``(images, labels)``, each entry
  of :data:`DIAGNOSTICS` is a ``(num_splits,)`` array, split ``l`` compared against its
  class Gaussian ``N(mu_l[c], sigma_l[c])``:

  * ``real_*``: the *real* forward activation ``h_l = f_l(...f_0(x))`` of each example,
    scored against its label's Gaussian: what the blocks after ``l`` see at test time.
  * ``sample_*``: block ``l``'s output on its *training inputs*, ``f_l(s_{l-1})`` on the
    synthetic samples of split ``l - 1`` (``S x C`` of them, noise of ``step``), scored
    against their class's Gaussian. Block 0 trains on real data, so at ``l = 0`` these are
    the ``real_*`` figures.
  * ``*_defect``: mean ``|shrink_m(z)|``, DistProp's constraint (margin, or block 0's
    ``first_margin`` at split 0, and shrinkage of the config),
    ``z = (h - mu_l[c]) / sigma_l[c]``; ``*_rms_z``: ``sqrt(mean z^2)`` (1 for a sample of
    the Gaussian itself, ``<= m`` in the band).
  * ``*_prototype_accuracy``: the share of activations whose nearest Gaussian (mean
    squared z-score) is their own class's; ``*_fisher``: between-class over within-class
    sum of squares of the activations (class means of the activations themselves).
  * ``real_agreement``: the share of examples whose nearest Gaussian at split ``l`` is the
    same class as at split ``l - 1`` (1 at split 0): how often block ``l`` changes the
    real chain's decision.
  * ``sigma_rms``: RMS of ``sigma_l``; ``prototype_distance``: mean distance between two
    class means per ``sqrt(H)`` (compare with ``sigma_rms``).

  Also ``real_accuracy`` / ``sample_accuracy``: the last segment's accuracy on the real
  chain and on the last split's synthetic samples (scalars).
  """
  opts = options.parse(config)
  labels = terms.sample_labels(terms.gaussians(opts, net).num_classes, opts.samples_per_class)
  return jax.jit(functools.partial(_diagnostics, opts, net, labels))


def split_diagnostics(config, net, params, constants, images, labels, step=0) -> dict:
  """:func:`make_split_diagnostics` for one call: per-split real vs synthetic figures."""
  return make_split_diagnostics(config, net)(params, constants, images, labels, step)


def _stats(opts: options.Options, num_classes: int, h, labels, proto):
  """``((defect, rms_z, prototype accuracy, Fisher ratio), nearest class)`` of the
  activations ``h`` against their labels' Gaussians (``labels`` index Gaussians; with
  ``components = K`` Gaussian ``j`` is class ``j // K``, and the nearest class is the
  nearest Gaussian's)."""
  mu, sigma = proto["mu"], terms.scale(proto, opts.sigma_floor)
  h2 = h.reshape(h.shape[0], -1)
  mu2, sigma2 = mu.reshape(num_classes, -1), sigma.reshape(num_classes, -1)
  z = terms.z_score(h2, mu2[labels], sigma2[labels])
  defect = jnp.mean(jnp.abs(terms.constraint(opts, z)))
  rms_z = jnp.sqrt(jnp.mean(z * z))
  dist = jnp.mean(jnp.square((h2[:, None] - mu2[None]) / sigma2[None]), axis=-1)  # (N, C)
  nearest = jnp.argmin(dist, -1) // opts.components
  proto_acc = jnp.mean(nearest == labels // opts.components)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  means = onehot.T @ h2 / jnp.maximum(onehot.sum(0)[:, None], 1.0)
  within = jnp.mean(jnp.sum(jnp.square(h2 - means[labels]), -1))
  between = jnp.mean(jnp.sum(jnp.square(means[labels] - h2.mean(0)), -1))
  return (defect, rms_z, proto_acc, between / jnp.maximum(within, 1e-12)), nearest


def _gaussian_figures(opts: options.Options, num_classes: int, proto):
  """``(sigma_rms, prototype_distance)`` of one split's Gaussians."""
  sigma = terms.scale(proto, opts.sigma_floor).reshape(num_classes, -1)
  mu = proto["mu"].reshape(num_classes, -1)
  d = jnp.sqrt(jnp.sum(jnp.square(mu[:, None] - mu[None]), -1) / mu.shape[1])
  return jnp.sqrt(jnp.mean(sigma * sigma)), jnp.sum(d) / (num_classes * (num_classes - 1))


def _diagnostics(opts, net, sample_labels, params, constants, images, labels, step=0):
  w = params["primal"]["weights"]
  protos = params["primal"]["aux"]["prototypes"]
  gaussians = terms.gaussians(opts, net)  # a split's Gaussians: C x components
  noise = terms.noise_of(opts, gaussians, constants, step)
  real = networks.segment_output(net, w, images)
  samples = [terms.block_input(opts, p, e, None) for p, e in zip(protos, noise)]
  rows = {k: [] for k in DIAGNOSTICS}
  previous = None
  for l in range(len(net.state_shapes)):
    own = terms.components_of(opts, real[l], protos[l], labels)
    r, nearest = _stats(
      terms.first_opts(opts) if l == 0 else opts, gaussians.num_classes, real[l], own, protos[l]
    )
    if l == 0:
      smp = r
    else:
      out = networks.apply_segment(net, w, l, samples[l - 1])
      smp, _ = _stats(opts, gaussians.num_classes, out, sample_labels, protos[l])
    agree = 1.0 if previous is None else jnp.mean(nearest == previous)
    rows["real_agreement"].append(jnp.asarray(agree, jnp.float32))
    previous = nearest
    for name, a, b in zip(("defect", "rms_z", "prototype_accuracy", "fisher"), r, smp):
      rows[f"real_{name}"].append(a)
      rows[f"sample_{name}"].append(b)
    sigma_rms, distance = _gaussian_figures(opts, gaussians.num_classes, protos[l])
    rows["sigma_rms"].append(sigma_rms)
    rows["prototype_distance"].append(distance)
  out = {k: jnp.stack(v).astype(jnp.float32) for k, v in rows.items()}
  logits = networks.apply_segment(net, w, len(net.state_shapes), samples[-1])
  out["real_accuracy"] = jnp.mean(jnp.argmax(real[-1], -1) == labels).astype(jnp.float32)
  sample_classes = sample_labels // opts.components
  out["sample_accuracy"] = jnp.mean(jnp.argmax(logits, -1) == sample_classes).astype(jnp.float32)
  return out
