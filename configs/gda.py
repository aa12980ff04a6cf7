"""GDA (Arrow-Hurwicz-Uzawa): ExtraProp's problem and step sizes without extrapolation.

Run:
  python -m experiments.main --config=configs/gda.py --workdir=runs/gda
"""

from configs import extraprop


def get_config():
  config = extraprop.get_config()
  config.method = "gda"
  return config
