"""Direct feedback alignment (Nøkland 2016) on a 3x256 ReLU MLP, the embedded MNIST-5k.

Run:
  python -m experiments.main --config=configs/dfa.py --workdir=runs/dfa

Chosen on the validation split (700 steps, seeds 0/1/2 vmapped, mean validation accuracy;
the test split not looked at) by these sweeps, 53 trials in all (2 CPU cores, ~10-30 s each):

  python -m experiments.sweep --config=configs/dfa.py --workdir=runs/sweep_dfa_adagrad \\
    --grid="optimizer=adagrad learning_rates.weights=0.003,0.01,0.03,0.1 \\
    dfa.feedback_scale=0.1,0.3,1.0,3.0" --config.num_seeds=3
  python -m experiments.sweep --config=configs/dfa.py --workdir=runs/sweep_dfa_adam \\
    --grid="optimizer=adam learning_rates.weights=0.0001,0.0003,0.001 \\
    dfa.feedback_scale=0.2,1.0" --config.num_seeds=3
  python -m experiments.sweep --config=configs/dfa.py --workdir=runs/sweep_dfa_sgd \\
    --grid="optimizer=sgd momentum=0.9 learning_rates.weights=0.01,0.03,0.1 \\
    dfa.feedback_scale=0.1,0.3,1.0" --config.num_seeds=3
  python -m experiments.sweep --config=configs/dfa.py --workdir=runs/sweep_dfa_schedule \\
    --grid="optimizer=adagrad dfa.feedback_scale=1.0 learning_rates.weights=0.01,0.02 \\
    lr_schedule.kind=step lr_schedule.every_epochs=8.0,16.0 lr_schedule.factor=0.3" \\
    --config.num_seeds=3
  python -m experiments.sweep --config=configs/dfa.py --workdir=runs/sweep_dfa_zero \\
    --grid="dfa.output_init=zero optimizer=adagrad learning_rates.weights=0.01,0.03 \\
    dfa.feedback_scale=0.3,1.0" --config.num_seeds=3
  python -m experiments.sweep --config=configs/dfa.py --workdir=runs/sweep_dfa_init \\
    --grid="optimizer=adagrad dfa.feedback_scale=1.0 adagrad_init=0.01,0.1 \\
    network.init=lecun_normal,he_normal learning_rates.weights=0.005,0.01" \\
    --config.num_seeds=3

  python -m experiments.sweep --config=configs/dfa.py --workdir=runs/sweep_dfa_clip \
    --grid="grad_clip=1.0,5.0 learning_rates.weights=0.01,0.03,0.05" --config.num_seeds=3

(run with the config as it stood before: adagrad 0.01, adagrad_init 0.1, feedback scale 1,
output_init "network"; the clipping sweep with the chosen config: clipping the global
gradient norm at 1 or 5 lets no larger rate win, 0.928 / 0.932 at rate 0.01, 0.911-0.917
at 0.03, 0.894-0.903 at 0.05). Best: adagrad, rate 0.005, adagrad_init 0.01, feedback scale 1.0:
validation 0.9347. Every variant of adagrad near rate 0.01 and scale 1 lies within noise
of it (0.933 for rate 0.01 / init 0.1, 0.934 for a zero-initialised output layer, 0.931
with a step schedule); Adam's best 0.925 (1e-3), SGD + momentum's 0.923 (0.01, scale 0.1:
larger scale x rate blows the ReLU activations up, down to chance); He init 0.913-0.919;
rates of 0.03 and above lose 1-5 points (the loss spikes to ~20 in the first 100 steps).

The report (docs/baselines.md; ``docs/table1_baselines_mlp/``), seeds
0/1/2: test 0.912 +- 0.005 (validation 0.935) against backprop's 0.941 (Adam) / 0.938 (SGD):
2.9 points short, outside the issue's 2.

Why the gap to backprop (validation 0.947) stays: the signal reaches every weight group
(relative change per step ~1e-2 at the start, ~2e-3 at step 700, the same order for all
four layers) and the projected error is aligned with the backprop one (cosine 0.50 / 0.25 /
0.12 at the three splits after 700 steps, ~0 at the start; both measured with the config
before the sweeps), but at 700 steps DFA is still under-fitted (batch loss 0.13-0.16 at
steps 600-700, backprop's 0.0004). With scale 1, ``e B_l`` is ~5-10x the backprop
``dL/dh_l`` (rms 0.30 vs 0.03-0.06 at the start); with an adaptive step rule that only sets
how soon Adagrad's accumulator dominates. Replacing every ReLU by tanh (a diagnostic
outside the library, which has no tanh) did not close it either: validation 0.925-0.931
for DFA (Adagrad 0.01 / 0.03, Adam 1e-3), 0.941 for backprop.
"""

import ml_collections

from configs import base


def get_config():
  config = base.get_config()
  config.method = "dfa"
  config.optimizer = "adagrad"  # validation: adagrad 0.935 > adam 0.925 > sgd 0.923
  config.learning_rates.weights = 0.005
  config.adagrad_init = 0.01  # Adagrad's initial accumulator (default 0.1)
  config.network.name = "mlp"
  config.network.depth = 3  # hidden layers: 784-256-256-256-10
  config.network.width = 256
  config.network.split = "every"  # every block its own segment: DFA's error reaches each
  config.network.split_activation = "relu"  # keep the ReLUs (the plain network)
  config.dfa = ml_collections.ConfigDict()
  config.dfa.feedback_scale = 1.0  # B_l ~ N(0, scale^2 / num_classes)
  config.dfa.output_init = "network"  # network | zero (the last segment starts at 0)
  return config
