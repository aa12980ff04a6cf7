"""One training iteration: the solver's step on the batch's rows of the train state."""

from __future__ import annotations

import jax

from lagrangian_jax import rows as rows_lib
from lagrangian_jax import solvers
from lagrangian_jax.data import base as data_base
from lagrangian_jax.methods import base


def make_train_step(
  method: base.Method, tx, tables: rows_lib.RowTables, average_decay: float, stats=None
):
  """One solver iteration on the batch's rows, for one seed: ``(state, batch) -> (state,
  metrics)``.

  The batch's rows of every per-example table (``tables``: parameters and the optimizer
  leaves that mirror them) are gathered, the solver steps on ``method.objective``, and the
  rows are scattered back. With ``average_decay = d > 0`` the state's average of the
  network weights moves to ``d a + (1 - d) x_{t+1}``. uint8 images are normalised here,
  on the device, with the data set's ``stats`` (``data.normalise_on_device``).
  """

  def train_step(state, batch: base.Batch):  # state: a ``state.TrainState``
    batch = batch._replace(images=data_base.normalise_on_device(batch.images, stats))
    params = rows_lib.gather(state.params, tables.params, batch.indices)
    opt_state = rows_lib.gather(state.opt_state, tables.opt_state, batch.indices)

    value_and_grad = method.value_and_grad or jax.value_and_grad(method.objective, has_aux=True)

    def grad_fn(p):
      (value, metrics), grads = value_and_grad(p, state.constants, batch)
      return grads, {"objective": value, **metrics}

    # metrics are taken at the iterate x_t (the first gradient evaluation)
    params, opt_state, metrics = solvers.solver_step(tx, grad_fn, params, opt_state, has_aux=True)
    average = state.average
    if average_decay > 0:
      weights = solvers.current_iterate(params, opt_state)["primal"]["weights"]
      average = jax.tree.map(
        lambda a, w: average_decay * a + (1 - average_decay) * w, average, weights
      )
    new_state = state._replace(
      step=state.step + 1,
      params=rows_lib.scatter(state.params, params, tables.params, batch.indices),
      opt_state=rows_lib.scatter(state.opt_state, opt_state, tables.opt_state, batch.indices),
      average=average,
    )
    return new_state, metrics

  return train_step
