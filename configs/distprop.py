"""DistProp on the embedded 5,000 MNIST digits (same as configs/default.py).

Run:
  python -m experiments.main --config=configs/distprop.py --workdir=runs/distprop
"""

from configs import default


def get_config():
  return default.get_config()
