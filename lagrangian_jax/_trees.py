"""The one pytree check that solvers and formulations share (chex, readable errors)."""

from __future__ import annotations

from typing import Any

import chex


def _detail(error: AssertionError) -> str:
  return str(error).split("failed:", 1)[-1].strip().replace("\n", " ")


def check_like(tree: Any, reference: Any, message: str) -> None:
  """Raises ``ValueError(message: ...)`` unless ``tree`` matches ``reference``.

  Same structure and same leaf shapes; the error says which leaf differs and how.

  Example:
    >>> import jax.numpy as jnp
    >>> check_like({'w': jnp.ones(3)}, {'w': jnp.ones(2)}, 'gradients')
    Traceback (most recent call last):
    ...
    ValueError: gradients: mismatched shapes: Trees 0 and 1 differ in leaves 'w': shapes: (3,) != (2,).
  """
  try:
    chex.assert_trees_all_equal_structs(tree, reference)
  except AssertionError as e:
    raise ValueError(f"{message}: not the same structure: {_detail(e)}") from None
  try:
    chex.assert_trees_all_equal_shapes(tree, reference)
  except AssertionError as e:
    raise ValueError(f"{message}: mismatched shapes: {_detail(e)}") from None
