"""lj.Problem: typed constraints decide the projection; multipliers, Lagrangians and
errors built from the problem; the functional API's guard on inequality multipliers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lagrangian_jax as lj
from tests.test_constrained_programs import CALLS
from tests.test_constrained_programs import PROBLEMS
from tests.test_constrained_programs import check_solution

TARGET = jnp.array([2.0, 1.0])


def objective(x):
  return jnp.sum((x - TARGET) ** 2)


def norm_constraint(x):  # |x|^2 <= 10: inactive at the answer (2, 1)
  return jnp.sum(x**2) - 10.0


INACTIVE = lj.Problem(objective, {"norm": lj.inequality(norm_constraint)})

SOLVERS = {
  "extra_adagrad": lambda: lj.extra_adagrad(0.5),
  "gda": lambda: lj.gda(0.05),
  "descent_ascent_sgd": lambda: lj.descent_ascent(optax.sgd(0.05), optax.sgd(0.05)),
  "past_extragradient_sgd": lambda: lj.past_extragradient(
    lj.descent_ascent(optax.sgd(0.05), optax.sgd(0.05))
  ),
}


def solve(grad_fn, params, tx, iterations):
  """The jitted solver_step path, ``iterations`` iterations in one compiled loop."""

  @jax.jit
  def run(params):
    def body(_, carry):
      return lj.solver_step(tx, grad_fn, *carry)

    params, state = jax.lax.fori_loop(0, iterations, body, (params, tx.init(params)))
    return lj.current_iterate(params, state)

  return run(params)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_inactive_inequality_through_problem_needs_no_flag(name):
  params = solve(jax.grad(INACTIVE.lagrangian), INACTIVE.init(jnp.zeros(2)), SOLVERS[name](), 2000)
  np.testing.assert_allclose(params["primal"], TARGET, atol=1e-4)
  assert float(params["dual"]["norm"].value) == 0.0


def functional_lagrangian(params):
  x = params["primal"]
  return lj.lagrangian(
    objective(x), inequality=norm_constraint(x), inequality_multipliers=params["dual"]
  )


def test_functional_api_unmarked_inequality_multiplier_raises():
  params = {"primal": jnp.zeros(2), "dual": jnp.zeros(())}  # the silent case
  with pytest.raises(TypeError, match=r"inequality_multipliers are not marked lj\.nonnegative"):
    jax.grad(functional_lagrangian)(params)
  with pytest.raises(TypeError, match="not marked"):  # also on a pytree of multipliers
    lj.lagrangian(0.0, inequality={"h": jnp.ones(2)}, inequality_multipliers={"h": jnp.ones(2)})


def test_functional_api_marked_multiplier_needs_no_flag():
  params = {"primal": jnp.zeros(2), "dual": lj.nonnegative(jnp.zeros(()))}
  params = solve(jax.grad(functional_lagrangian), params, lj.gda(0.05), 2000)
  np.testing.assert_allclose(params["primal"], TARGET, atol=1e-4)
  assert float(params["dual"].value) == 0.0


def test_without_the_projection_the_inequality_is_solved_as_an_equality():
  """Why the guard exists: the same problem, its multiplier left free (an equality)."""
  problem = lj.Problem(objective, {"norm": lj.equality(norm_constraint)})
  params = problem.init(jnp.zeros(2))
  params = solve(jax.grad(problem.lagrangian), params, lj.extra_adagrad(0.5), 2000)
  np.testing.assert_allclose(params["primal"], [2.828, 1.414], atol=1e-3)  # |x|^2 = 10
  np.testing.assert_allclose(params["dual"]["norm"], 5**0.5 / 10**0.5 - 1, atol=1e-3)


def test_marker_projects_even_with_nonnegative_false():
  params = {"primal": jnp.asarray(0.0), "dual": {"h": lj.nonnegative(jnp.asarray(0.05))}}
  tx = lj.gda(0.1, nonnegative=False)
  grads = {"primal": jnp.asarray(0.0), "dual": {"h": lj.nonnegative(jnp.asarray(-1.0))}}
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(optax.apply_updates(params, updates)["dual"]["h"].value) == 0.0


def from_test_program(name):
  prob = PROBLEMS[name]
  constraints = {}
  if "eq" in prob:
    constraints["eq"] = lj.equality(prob["eq"])
  if "ineq" in prob:
    constraints["ineq"] = lj.inequality(prob["ineq"])
  return prob, lj.Problem(prob["f"], constraints)


@pytest.mark.parametrize("name", ["NW12.3", "HS35", "HS7"])
def test_problem_solves_known_programs(name):
  prob, problem = from_test_program(name)
  params = problem.init(jnp.asarray(prob["x0"], jnp.float32))
  # extra_adagrad(0.5) as in test_constrained_programs: CALLS two-call updates are
  # CALLS / 2 one-call iterations
  params = solve(jax.grad(problem.lagrangian), params, lj.extra_adagrad(0.5), CALLS // 2)
  check_solution(prob, params["primal"])
  if "ineq" in prob:
    assert float(jnp.min(params["dual"]["ineq"].value)) >= 0.0


def test_multipliers_kinds_and_shapes_from_eval_shape():
  problem = lj.Problem(
    lambda x: jnp.sum(x),
    {
      "g": lj.equality(lambda x: {"a": x[:2], "b": x[0]}),
      "h": lj.inequality(lambda x: x - 1.0),
    },
  )
  dual = problem.multipliers(jnp.ones(3))
  assert jax.tree.map(jnp.shape, dual["g"]) == {"a": (2,), "b": ()}
  assert isinstance(dual["h"], lj.Nonnegative) and dual["h"].value.shape == (3,)
  assert not isinstance(dual["g"], lj.Nonnegative)


def test_lagrangian_augmented_and_penalty_are_the_formulations():
  problem = lj.Problem(
    objective,
    {"line": lj.equality(lambda x: x[0] - x[1] - 0.5), "norm": lj.inequality(norm_constraint)},
  )
  x = jnp.array([1.0, 3.0])
  params = {
    "primal": x,
    "dual": {"line": jnp.asarray(0.7), "norm": lj.nonnegative(jnp.asarray(0.3))},
  }
  g, h = {"line": x[0] - x[1] - 0.5}, {"norm": norm_constraint(x)}
  lam, mu = {"line": jnp.asarray(0.7)}, lj.nonnegative({"norm": jnp.asarray(0.3)})
  assert float(problem.lagrangian(params)) == float(lj.lagrangian(objective(x), g, lam, h, mu))
  assert float(problem.augmented_lagrangian(params, penalty=2.0)) == float(
    lj.augmented_lagrangian(objective(x), g, lam, h, mu, penalty=2.0)
  )
  assert float(problem.penalty(x, penalty=3.0)) == float(
    lj.quadratic_penalty(objective(x), g, h, penalty=3.0)
  )


def test_band_is_epsilon_insensitive():
  problem = lj.Problem(lambda x: 0.0, {"g": lj.equality(lambda x: x, band=0.5)})
  x = jnp.array([-2.0, 0.2, 1.0])
  np.testing.assert_array_equal(problem.true_values(x)["g"], [-1.5, 0.0, 0.5])
  np.testing.assert_array_equal(problem.values(x)["g"], [-1.5, 0.0, 0.5])
  with pytest.raises(ValueError, match="band"):
    lj.Problem(lambda x: 0.0, {"h": lj.Constraint(lambda x: x, "inequality", band=0.1)}).values(x)


def test_proxy_constraint_multiplier_sees_true_value_model_the_surrogate():
  true = lambda x: jnp.round(x) - 1.0  # no gradient
  surrogate = lambda x: 2.0 * x
  problem = lj.Problem(lambda x: 0.0, {"h": lj.inequality(true, proxy=surrogate)})
  params = {"primal": jnp.asarray(2.3), "dual": {"h": lj.nonnegative(jnp.asarray(0.25))}}
  grads = jax.grad(problem.lagrangian)(params)
  assert float(grads["dual"]["h"].value) == float(true(2.3))  # 1.0
  assert float(grads["primal"]) == 0.25 * 2.0


def test_indexed_multipliers_gather_scatter_and_shape_hint():
  problem = lj.Problem(
    lambda x, batch: jnp.sum(x**2),
    {"fit": lj.equality(lambda x, batch: batch * x[0] - 1.0, indexed=True)},
    reduction="batch_mean",
  )
  batch = jnp.array([1.0, 2.0])
  with pytest.raises(ValueError, match="num_examples"):
    problem.multipliers(jnp.ones(1), batch)
  table = problem.multipliers(jnp.ones(1), batch, num_examples=6)
  assert table["fit"].shape == (6,)
  idx = jnp.array([4, 1])
  part = problem.gather(table, idx)
  assert part["fit"].shape == (2,)
  params = {"primal": jnp.ones(1), "dual": part}
  grads = jax.grad(problem.lagrangian)(params, batch)
  np.testing.assert_allclose(grads["dual"]["fit"], (batch - 1.0) / 2)  # batch_mean
  table = problem.scatter(table, {"fit": jnp.array([5.0, 7.0])}, idx)
  np.testing.assert_array_equal(table["fit"], [0, 7, 0, 0, 5, 0])
  with pytest.raises(ValueError, match=r"'fit' has shape \(2,\).*\(6,\).*problem\.gather"):
    problem.lagrangian({"primal": jnp.ones(1), "dual": table}, batch)


# ------------------------------------------------------------------ errors naming things


def test_missing_multiplier_set_names_the_argument():
  with pytest.raises(ValueError, match="inequality is given but inequality_multipliers is None"):
    lj.lagrangian(0.0, inequality=jnp.ones(2))
  with pytest.raises(ValueError, match="equality is given but equality_multipliers is None"):
    lj.augmented_lagrangian(0.0, jnp.ones(2))
  params = INACTIVE.init(jnp.zeros(2))
  with pytest.raises(ValueError, match=r"no multiplier for constraint\(s\) \['norm'\]"):
    INACTIVE.lagrangian({"primal": params["primal"], "dual": {}})
  with pytest.raises(ValueError, match=r"\['extra'\] belong to no constraint"):
    INACTIVE.lagrangian({**params, "dual": {**params["dual"], "extra": jnp.zeros(())}})


def test_changed_constraint_shape_names_the_constraint():
  problem = lj.Problem(lambda x: jnp.sum(x), {"box": lj.inequality(lambda x: x - 1.0)})
  params = problem.init(jnp.zeros(2))
  with pytest.raises(ValueError, match=r"constraint 'box' has shape \(3,\) but its multiplier"):
    problem.lagrangian({"primal": jnp.zeros(3), "dual": params["dual"]})


def test_wrong_kind_of_multiplier_names_the_constraint():
  params = {"primal": jnp.zeros(2), "dual": {"norm": jnp.zeros(())}}
  with pytest.raises(TypeError, match=r"'norm' is an inequality.*lj\.nonnegative"):
    INACTIVE.lagrangian(params)
  problem = lj.Problem(objective, {"line": lj.equality(lambda x: x[0] - x[1])})
  with pytest.raises(TypeError, match=r"'line' is an equality.*free"):
    problem.lagrangian({"primal": jnp.zeros(2), "dual": {"line": lj.nonnegative(0.0)}})
  with pytest.raises(TypeError, match="equality_multipliers contain lj.nonnegative"):
    lj.lagrangian(0.0, jnp.ones(()), lj.nonnegative(jnp.ones(())))


def test_method_of_multipliers_update_keeps_the_marker():
  _, mu = lj.method_of_multipliers_update(
    inequality_multipliers=lj.nonnegative(jnp.array([1.0, 1.0])),
    inequality=jnp.array([-3.0, 1.0]),
  )
  assert isinstance(mu, lj.Nonnegative)
  np.testing.assert_array_equal(mu.value, [0.0, 2.0])


def test_method_of_multipliers_solver_refuses_inequality_multipliers():
  """lj.method_of_multipliers updates lam + c g only: a marked multiplier is an error."""
  params = INACTIVE.init(jnp.zeros(2))
  tx = lj.method_of_multipliers(optax.sgd(0.1))
  with pytest.raises(TypeError, match="equality_multipliers contain lj.nonnegative"):
    lj.solver_step(tx, jax.grad(INACTIVE.augmented_lagrangian), params, tx.init(params))
