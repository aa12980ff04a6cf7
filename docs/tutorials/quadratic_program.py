r"""Tutorial: a quadratic program with a known solution, through ``lj.Problem``.

.. math::
  \min_x \|x - a\|^2,\quad a = (2, 1, 0) \quad\text{s.t.}\quad
  x_0 + x_1 + x_2 = 2,\qquad x_0 - x_1 \le 0.5,\qquad x_2 \ge -1

By hand (KKT): with ``L = f + lam g + mu_1 h_1 + mu_2 h_2`` the stationarity
``2(x - a) + lam (1,1,1) + mu_1 (1,-1,0) - mu_2 (0,0,1) = 0`` gives, with the first
inequality active and the second inactive (``mu_2 = 0``),
``x = a - lam/2 (1,1,1) - mu_1/2 (1,-1,0)``; the equality gives ``lam = 2/3`` and
``x_0 - x_1 = 0.5`` gives ``mu_1 = 1/2``: ``x* = (17/12, 11/12, -1/3)``, ``f* = 11/24``,
and ``x_2 = -1/3 > -1`` confirms ``mu_2 = 0``.

The problem declares each constraint's kind once; the multipliers (inequality ones
marked ``lj.nonnegative``) come from the problem, and any solver of the library runs it
with no ``nonnegative=`` flag, one compiled ``solver_step`` per iteration (here the whole
loop is one ``jax.lax.fori_loop`` under ``jax.jit``).

Run: ``python docs/tutorials/quadratic_program.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lagrangian_jax as lj

A = jnp.array([2.0, 1.0, 0.0])
X_STAR = np.array([17 / 12, 11 / 12, -1 / 3])
F_STAR = 11 / 24
LAM_STAR, MU_STAR = 2 / 3, (0.5, 0.0)

problem = lj.Problem(
  objective=lambda x: jnp.sum((x - A) ** 2),
  constraints={
    "sum": lj.equality(lambda x: jnp.sum(x) - 2.0),
    "gap": lj.inequality(lambda x: x[0] - x[1] - 0.5),
    "floor": lj.inequality(lambda x: -1.0 - x[2]),
  },
)

SOLVERS = {  # every one of these projects the inequality multipliers by itself
  "extra_adagrad": lambda: lj.extra_adagrad(0.5),
  "extragradient(sgd)": lambda: lj.extragradient(lj.descent_ascent(optax.sgd(0.1), optax.sgd(0.1))),
  "gda": lambda: lj.gda(0.05),
}


def solve(tx, iterations=3000):
  """``iterations`` jitted solver steps from ``x = 0``, multipliers from the problem."""
  grad_fn = jax.grad(problem.lagrangian)

  @jax.jit
  def run(params):
    body = lambda _, carry: lj.solver_step(tx, grad_fn, *carry)
    return jax.lax.fori_loop(0, iterations, body, (params, tx.init(params)))

  params, state = run(problem.init(jnp.zeros(3)))
  return lj.current_iterate(params, state)


def main():
  """Solves the QP with each solver; returns and checks ``{solver: (x, f, multipliers)}``."""
  figures = {}
  for name, make in SOLVERS.items():
    params = solve(make())
    x, dual = np.asarray(params["primal"]), params["dual"]
    multipliers = (float(dual["sum"]), float(dual["gap"].value), float(dual["floor"].value))
    f = float(problem.objective(params["primal"]))
    figures[name] = (x.tolist(), f, multipliers)
    print(f"{name:20s} x = {np.round(x, 5)}  f = {f:.6f}  (lam, mu) = {np.round(multipliers, 5)}")
    np.testing.assert_allclose(x, X_STAR, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(f, F_STAR, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(multipliers, (LAM_STAR, *MU_STAR), atol=1e-3, err_msg=name)
    assert multipliers[2] == 0.0, (name, "the inactive constraint's multiplier is exactly 0")
  return figures


if __name__ == "__main__":
  main()
