"""The collectives of a compiled XLA program: what crosses between devices, and how much.

Read from ``jax.jit(f).lower(...).compile().as_text()``, so the figures are what the
partitioner and ``shard_map`` actually emitted, not an estimate. A collective whose
groups are single devices (``replica_groups={{0},{1}}``, e.g. a ``psum`` over a mesh axis
of size 1) or whose ``collective-permute`` has no pairs moves nothing and is skipped by
:func:`moved_bytes`.

Example:
  >>> text = "  %cp = f32[1,10,32]{2,1,0} collective-permute(%x), source_target_pairs={{0,1}}"
  >>> collectives(text)
  [Collective(op='collective-permute', bytes=1280, group_size=2)]
"""

from __future__ import annotations

import re
from typing import NamedTuple

OPS = ("all-reduce", "collective-permute", "all-gather", "reduce-scatter", "all-to-all")
_OP = re.compile(r"\s(" + "|".join(OPS) + r")(?:-start)?\(")
_SHAPE = re.compile(r"\b(pred|bf16|[fsuc]\d+)\[([\d,]*)\]")
_GROUPS = re.compile(r"replica_groups=\{(\{[\d,]*\})")
_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]")
_PAIRS = re.compile(r"source_target_pairs=\{([^=]*)\}")


class Collective(NamedTuple):
  op: str
  bytes: int  # of its result (a tuple's elements summed)
  group_size: int | None  # devices per group; None where the text does not say simply


def _bytes(result: str) -> int:
  total = 0
  for dtype, dims in _SHAPE.findall(result):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * (1 if dtype == "pred" else int(re.sub(r"\D", "", dtype)) // 8)
  return total


def _group_size(op: str, line: str) -> int | None:
  if op == "collective-permute":
    pairs = _PAIRS.search(line)
    return None if pairs is None else (2 if "{" in pairs.group(1) else 1)
  groups = _GROUPS.search(line)
  if groups:
    return len(list(filter(None, groups.group(1).strip("{}").split(","))))
  iota = _IOTA.search(line)
  return int(iota.group(2)) if iota else None


def collectives(hlo_text: str) -> list[Collective]:
  """Every collective instruction of an HLO module's text, in order."""
  out = []
  for line in hlo_text.splitlines():
    match = _OP.search(line)
    if not match or " = " not in line:
      continue
    rhs = line.split(" = ", 1)[1]
    op = match.group(1)
    out.append(Collective(op, _bytes(rhs[: rhs.find(op)]), _group_size(op, line)))
  return out


def moved_bytes(hlo_text: str) -> int:
  """Result bytes of the collectives that involve more than one device."""
  return sum(c.bytes for c in collectives(hlo_text) if c.group_size != 1)
