"""Every config key has a rule (``lagrangian_jax/config_rules.py``), and every value is
checked by it: issue 20's "every option read is validated, by one helper"."""

import importlib
import os
import pkgutil
import re
import subprocess
import sys

import ml_collections
import pytest

import configs
from configs import base
from lagrangian_jax import config_rules
from lagrangian_jax import errors
from lagrangian_jax.config_rules import RULES
from tests.conftest import ROOT

CONFIGS = sorted(m.name for m in pkgutil.iter_modules(configs.__path__))


def _config(name: str):
  return importlib.import_module(f"configs.{name}").get_config()


def _with(key: str, value):
  """``configs/base.py``'s config with ``key`` set to ``value``, whatever its type (the
  key and its section added when base lacks them, as the baselines' sections)."""
  tree = base.get_config().to_dict()
  *parents, last = key.split(".")
  node = tree
  for p in parents:
    node = node.setdefault(p, {})
  node[last] = value
  return ml_collections.ConfigDict(tree)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_validates(name):
  config_rules.validate(_config(name))


def test_every_key_of_every_config_has_a_rule_and_every_rule_a_key():
  keys = {k for name in CONFIGS for k, _ in config_rules.leaves(_config(name))}
  assert keys == set(RULES), (keys - set(RULES), set(RULES) - keys)


@pytest.mark.parametrize("key", sorted(RULES))
def test_each_rule_refuses_its_bad_value_naming_the_key(key):
  rule = RULES[key]
  assert not rule.predicate(rule.bad)
  with pytest.raises(errors.ConfigError) as e:
    config_rules.validate(_with(key, rule.bad))
  assert str(e.value) == f"config.{key}: must be {rule.expect}, got {rule.bad!r}"


@pytest.mark.parametrize(
  "key, value",
  [
    ("distprop.noise", "Fixed"),  # issue 20's defect 5: once silently per-step noise
    ("distprop.noise", "perstep"),
    ("network.name", "MLP"),
    ("data.pipeline", "Memory"),
    ("batch_size", -8),
    ("batch_size", 32.0),
    ("num_steps", True),  # a bool is no int
    ("learning_rates.weights", float("nan")),
    ("learning_rates.weights", "0.1"),
    ("network.split", "1;2"),
    ("evaluators", "accuracy"),  # the summary reports defects too
    ("evaluators", "accuracy,defects,confusion"),
    ("mesh.stage", 0),
    ("momentum", 1.0),
    ("dual_optimizer", "SGD"),  # issue 23: the multipliers' rule, case counts
    ("dual_optimizer", "adagrad0"),
    ("lifted.band", -0.44),  # the authors' band has the other sign convention of g only
    ("lifted.shrinkage", "softshrink"),
  ],
)
def test_probes_are_refused(key, value):
  with pytest.raises(errors.ConfigError, match=rf"^config\.{re.escape(key)}: must be "):
    config_rules.validate(_with(key, value))


@pytest.mark.parametrize(
  "key, value",
  [
    ("network.split", "1, 2"),
    ("network.split", ""),
    ("network.split", [1, 2]),
    ("evaluators", "accuracy, defects, split_diagnostics"),
    ("mesh.num_devices", 8),
    ("solver", "gda"),
    ("learning_rates.weights", 0),  # an int where a float is declared
  ],
)
def test_good_values_pass(key, value):
  config_rules.validate(_with(key, value))


def test_a_key_without_a_rule_is_refused_naming_it():
  for key in ("num_stepz", "distprop.nosie", "newsection.key"):
    with pytest.raises(errors.ConfigError) as e:
      config_rules.validate(_with(key, 1))
    assert str(e.value) == (
      f"config.{key}: no rule in lagrangian_jax/config_rules.py; every key needs one"
    )


def test_a_section_is_validated_alone():
  config = _with("dtp.noise", -1.0)
  config_rules.validate(config, "distprop")  # nothing wrong there
  with pytest.raises(errors.ConfigError, match=r"^config\.dtp\.noise: "):
    config_rules.validate(config, "dtp")
  config_rules.validate(base.get_config(), "dtp")  # a section the config lacks


# --- every key the sources read has a rule ----------------------------------------------
# Reads are found by regular expressions over lagrangian_jax/ and experiments/:
# ``config.a.b`` (any name ending in ``config``), ``config.a.get("b"`` / ``config["a"]``,
# and reads through a name bound to a section in a function (``opts = config.distprop``:
# ``opts.noise``, up to the function's end).
# A read must be a key of RULES or a section of one; what follows a section may be one of
# ConfigDict's methods. The exclusions are these few, each a word in prose, not a read.

_METHODS = {
  "get",
  "items",
  "to_json",
  "to_json_best_effort",
  "to_dict",
  "copy_and_resolve_references",
}
_PROSE = {
  "config.json",  # a file name
  "config.a.b",  # errors.py's docstring: the form of a key
  "config.k",  # identity.py's docstring: the form of a key
  "config.num_stepz",  # a typo, the example of the launcher's suggestion
}
_PARAMETERS = {"network_config": "network"}  # functions given one section
_READ = re.compile(r"\b(\w*config)((?:\.\w+)+)")
_ITEM = re.compile(r"\b(\w*config)((?:\.\w+)*)(?:\.get\(|\[)\s*\"(\w+)\"")
_ALIAS = re.compile(r"^\s*(\w+) = (?:\w+\.)?config((?:\.\w+)*)(?:\.get\(\"(\w+)\"\))?\s*$", re.M)


def _sources():
  for top in ("lagrangian_jax", "experiments"):
    for folder, _, files in os.walk(os.path.join(ROOT, top)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(folder, f)
          with open(path) as fh:
            yield os.path.relpath(path, ROOT), fh.read()


def _resolves(key: str) -> bool:
  return key in RULES or any(k.startswith(key + ".") for k in RULES)


def _reads(text: str):
  """``(dotted key, what was written)`` for each read of a config key in ``text``."""
  for m in _READ.finditer(text):
    name, path = m.group(1), m.group(2).lstrip(".").split(".")
    if f"config.{'.'.join(path)}" in _PROSE or name not in ("config", *_PARAMETERS):
      continue
    while path and (path[-1] in _METHODS or ".".join(path[:-1]) in RULES):
      path.pop()  # a ConfigDict's method, or the value's (config.evaluators.split)
    prefix = [_PARAMETERS[name]] if name in _PARAMETERS else []
    if path or prefix:
      yield ".".join(prefix + path), m.group(0)
  for m in _ITEM.finditer(text):
    name, path = m.group(1), m.group(2).lstrip(".").split(".") if m.group(2) else []
    if name in ("config", *_PARAMETERS):
      prefix = [_PARAMETERS[name]] if name in _PARAMETERS else []
      yield ".".join(prefix + path + [m.group(3)]), m.group(0)
  for alias in _ALIAS.finditer(text):
    section = ".".join(p for p in (alias.group(2).lstrip("."), alias.group(3)) if p)
    if not any(k.startswith(section + ".") for k in RULES):
      continue  # a leaf, not a section
    attr = re.compile(rf"\b{alias.group(1)}(?:(?:\.get\(|\[)\s*\"(\w+)\"|\.(\w+))")
    end = re.compile(r"^\S", re.M).search(text, alias.end())  # the alias's function ends
    for m in attr.finditer(text, alias.end(), end.start() if end else len(text)):
      key = m.group(1) or m.group(2)
      if key not in _METHODS:
        yield f"{section}.{key}", m.group(0)


def test_every_config_key_the_sources_read_has_a_rule():
  seen, missing = set(), []
  for path, text in _sources():
    for key, written in _reads(text):
      seen.add(key)
      if not _resolves(key):
        missing.append(f"{path}: {written} ({key})")
  assert not missing, missing
  # the scan finds reads of every kind: attribute, .get, through a section's alias
  assert {"distprop.noise", "distprop.mix_fraction", "dfa.output_init", "lr_schedule.kind"} <= seen
  assert {"evaluators", "mesh.stage", "network.depth", "data.prefetch"} <= seen


def test_the_scan_finds_a_read_of_a_key_without_a_rule():
  text = (
    'def f(config):\n  x = config.distprop.nosie\n  opts = config.dtp\n  return opts.get("nois")\n'
  )
  keys = [k for k, _ in _reads(text) if not _resolves(k)]
  assert keys == ["distprop.nosie", "dtp.nois"]


# --- the launcher -----------------------------------------------------------------------


def test_the_launcher_refuses_a_bad_value_in_one_line(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.main",
      "--config=configs/smoke.py",
      "--config.distprop.noise=Fixed",
      f"--workdir={tmp_path}/run",
    ],
    cwd=ROOT,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 1, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert lines == [
    "error: config.distprop.noise: must be one of ['fixed', 'per_step'], got 'Fixed'"
  ], proc.stderr
  assert not os.path.exists(tmp_path / "run")  # refused before the workdir is made
  assert "Traceback" not in proc.stderr
