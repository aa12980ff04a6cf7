"""DistProp on the embedded 5,000 MNIST digits: the main job, ``configs/default.py``.

Every method of ``lagrangian_jax.methods.METHODS`` has its config at
``configs/<method>.py``; DistProp's is the default one.

Run:
  python -m experiments.main --config=configs/distprop.py --workdir=runs/distprop
"""

from configs.default import get_config

__all__ = ["get_config"]
