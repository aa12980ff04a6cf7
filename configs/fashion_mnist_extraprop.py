"""ExtraProp on the full Fashion-MNIST: ``configs/extraprop.py``, evaluated at an EMA of weights.

Needs: apt-get install dataset-fashion-mnist  (IDX files in /usr/share/datasets/fashion-mnist)

At Table 1's Fashion-MNIST budget (3,000 steps of batch 128, 7 epochs of the 54,000
training images) each per-example state and multiplier row moves 7 times. With
``configs/extraprop.py`` as it is the iterate swings between evaluations and falls at the
end while its defect grows (seed 0, validation: 0.871 / 0.844 / 0.882 / 0.892 / 0.880 /
0.834 at steps 1,500 .. 3,000, defect 0.12 -> 0.20). Chosen on the validation split (seed 0):

  python -m experiments.sweep --config=configs/extraprop.py --workdir=runs/fsweep_ema \
    --grid="average_decay=0.995,0.998,0.999" --config.data.name=fashion_mnist \
    --config.num_steps=3000 --config.eval_every=300 --config.num_seeds=1

and, the same way, ``--grid="learning_rates.dual=0.2 learning_rates.aux=2.0,0.5"`` and
``--grid="learning_rates.weights=0.01"`` (each trial ~20 min on 2 cores, two at a time).
Validation accuracy at step 3,000 (``configs/extraprop.py``'s values unless named):
  * ``average_decay=0`` (the iterate itself, seed 0 of the Table 1 row): 0.834
  * ``learning_rates.dual=0.2``, ``learning_rates.aux=2.0``: 0.846
  * ``learning_rates.dual=0.2`` (aux 0.5): 0.665 at step 600 (0.804 without), stopped there
  * ``learning_rates.weights=0.01``: 0.859 (peak 0.875 at step 2,700)
  * ``average_decay=0.995``: **0.901** (chosen)
  * ``average_decay=0.998``: 0.898
  * ``average_decay=0.999``: 0.894

The average (``step.py``: ``a <- d a + (1 - d) w`` after every step, from the initial
weights) only changes what is evaluated: the three averaged trials train exactly the
iterate's run (their defects are its defects, seed 0 of the Table 1 row). 0.99 and below
were not tried. The decay is for this budget: a horizon of ~200 steps here, while at the
MNIST-5k row's 700 steps ``configs/extraprop.py`` meets its target without one.

The multipliers' rule and the band are ``configs/extraprop.py``'s (the primal's rule, no
band); neither was tried on this data set.

Run:
  python -m experiments.main --config=configs/fashion_mnist_extraprop.py --workdir=runs/fmnist_ep
"""

from configs import extraprop


def get_config():
  config = extraprop.get_config()
  config.data.name = "fashion_mnist"
  config.num_steps = 3000  # Table 1's Fashion-MNIST budget
  config.eval_every = 300
  config.checkpoint_every = 300
  config.average_decay = 0.995
  return config
