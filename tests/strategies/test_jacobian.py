"""The ``jacobian`` strategy: Jacobian descent across trials with UPGrad.

In-process ask/tell on analytic problems (no Ray), plus one end-to-end Study on a local Ray.
"""

from __future__ import annotations

import logging
import math
import random

import numpy as np
import pytest

import distopt
from distopt._errors import ConfigError
from distopt._problem import Problem, TrialResult
from distopt.examples import two_bowls
from distopt.gradients import grad_key
from distopt.strategies import make_strategy
from distopt.strategies._jacobian import JacobianStrategy

A = np.array([0.2, 0.3, 0.4])
B = np.array([0.7, 0.6, 0.5])
SPACE = {f"x{i}": distopt.Float(0.0, 1.0) for i in range(3)}


def bowls(config):
    """f1 = |x - a|^2, f2 = |x - b|^2: the Pareto set is the segment [a, b]."""
    x = np.array([config[f"x{i}"] for i in range(3)])
    return {"f1": float(((x - A) ** 2).sum()), "f2": float(((x - B) ** 2).sum()),
            "g": float(x.sum())}


def bowls_with_gradients(config):
    out = bowls(config)
    x = np.array([config[f"x{i}"] for i in range(3)])
    for i in range(3):
        out[grad_key("f1", f"x{i}")] = float(2 * (x[i] - A[i]))
        out[grad_key("f2", f"x{i}")] = float(2 * (x[i] - B[i]))
        out[grad_key("g", f"x{i}")] = 1.0
    return out


def distance_to_segment(x):
    t = np.clip((x - A) @ (B - A) / ((B - A) @ (B - A)), 0.0, 1.0)
    return float(np.linalg.norm(x - (A + t * (B - A))))


def min_norm_combination(x):
    """Pareto-stationarity measure: min over w in [0, 1] of |w g1 + (1 - w) g2|."""
    g1, g2 = 2 * (x - A), 2 * (x - B)
    diff = g1 - g2
    w = np.clip(-(g2 @ diff) / max(diff @ diff, 1e-300), 0.0, 1.0)
    return float(np.linalg.norm(w * g1 + (1 - w) * g2))


def run(strategy, objective, problem, n_trials, batch=1, shuffle_seed=None):
    """Drive ``strategy`` in process: ask ``batch`` at a time with the running ones pending."""
    strategy.bind(problem)
    rng = random.Random(shuffle_seed)
    results, running, next_id = [], [], 0
    while len(results) < n_trials:
        room = min(batch - len(running), n_trials - len(results) - len(running))
        if room > 0:
            for config in strategy.ask(room, [c for _, c in running]):
                running.append((next_id, config))
                next_id += 1
        index = rng.randrange(len(running)) if shuffle_seed is not None else 0
        trial_id, config = running.pop(index)
        result = TrialResult(trial_id, config, "COMPLETE", objective(config))
        results.append(result)
        strategy.tell([result])
    strategy.running = [c for _, c in running]  # handed out, never told: a resume re-runs them
    return results


def test_population_converges_to_pareto_stationary_points():
    problem = Problem(SPACE, {"f1": "min", "f2": "min"})
    # Walks end on Pareto-stationarity alone here, judged on measured Jacobians (no "too little
    # progress" shortcuts, no Broyden estimates: those are tested on their own below).
    strategy = JacobianStrategy(seed=0, population=4, ftol=0.0, ptol=0.0, broyden=0)
    run(strategy, bowls, problem, 400)
    ends = [e for e in strategy.stationary if e["reason"] == "stationary"]
    assert len(ends) >= 4
    for end in ends:
        x = end["x"]
        assert distance_to_segment(x) < 0.01, x
        assert min_norm_combination(x) < 0.02, x
    # The population traces the front, not one point of it: the ends spread along the segment.
    along = [float((e["x"] - A) @ (B - A) / ((B - A) @ (B - A))) for e in ends]
    assert max(along) - min(along) > 0.3
    # Members still walking are close as well (they started far: the cube's corners are > 0.3 away).
    walked = [m for m in strategy.members if m.steps >= 3]
    assert all(distance_to_segment(m.x) < 0.05 for m in walked)


@pytest.mark.parametrize("precondition", [1.0, 10.0])
def test_every_accepted_step_worsens_no_objective_to_first_order(precondition):
    problem = Problem(SPACE, {"f1": "min", "f2": "max"})  # a max objective: rows are sign-flipped

    def objective(config):
        out = bowls(config)
        return {"f1": out["f1"], "f2": -out["f2"]}

    strategy = JacobianStrategy(seed=1, population=3, precondition=precondition)
    results = run(strategy, objective, problem, 250)
    accepted = [h for h in strategy.history if h["accepted"]]
    assert len(accepted) >= 10
    for entry in accepted:
        jacobian, step = entry["jacobian"], entry["step"]
        scale = np.linalg.norm(jacobian, axis=1) * np.linalg.norm(step)
        assert np.all(jacobian @ step <= 1e-6 * scale + 1e-12), (jacobian @ step, scale)
        # The direction itself: J d >= 0, so -d is a descent direction for every row.
        assert np.all(jacobian @ entry["direction"] >= -1e-8 * np.linalg.norm(jacobian, axis=1))
    # And on the actual values: an accepted center is no worse than the previous one in any row.
    by_config = {tuple(np.round([r.config[f"x{i}"] for i in range(3)], 6)): r.metrics
                 for r in results}
    for entry in accepted:
        before = by_config[tuple(np.round(entry["x"], 6))]
        after = by_config[tuple(np.round(entry["x"] + entry["step"], 6))]
        assert after["f1"] <= before["f1"] + 1e-3 * abs(before["f1"])
        assert -after["f2"] <= -before["f2"] + 1e-3 * abs(before["f2"])


def test_preconditioning_moves_a_weakly_influential_coordinate_to_its_pareto_value():
    """f_i = (x1 - a_i)^2 + w (x2 - 0.7)^2 with w = 0.01: the Pareto set is x1 in [0.2, 0.8] at
    x2 = 0.7, but x2's column is about 1/30 of x1's. Plain UPGrad gives x2 a component as small
    as its column, and walks end 'stationary' (too little predicted gain) with x2 far off; with
    columns equalised up to 10x the ends lie much closer to x2 = 0.7."""
    space = {"x1": distopt.Float(0.0, 1.0), "x2": distopt.Float(0.0, 1.0)}
    problem = Problem(space, {"f1": "min", "f2": "min"})

    def weak(config):
        x1, x2 = config["x1"], config["x2"]
        return {"f1": (x1 - 0.2) ** 2 + 0.01 * (x2 - 0.7) ** 2,
                "f2": (x1 - 0.8) ** 2 + 0.01 * (x2 - 0.7) ** 2}

    def end_errors(precondition):
        errors = []
        for seed in range(3):
            strategy = JacobianStrategy(seed=seed, population=4, source="fd", broyden=0,
                                        precondition=precondition)
            run(strategy, weak, problem, 120)
            stationary = [e for e in strategy.stationary if e["reason"] == "stationary"]
            assert stationary
            errors += [abs(e["x"][1] - 0.7) for e in stationary]
            for entry in strategy.history:  # still no conflict with any row
                assert np.all(entry["jacobian"] @ entry["direction"]
                              >= -1e-8 * np.linalg.norm(entry["jacobian"], axis=1))
        return float(np.median(errors))

    plain, equalised = end_errors(1.0), end_errors(10.0)
    assert plain > 0.05
    assert equalised < 0.5 * plain, (plain, equalised)


def test_no_trace_towards_an_objective_whose_descent_the_box_holds():
    """f2's minimum lies outside the cube (x0 = 1.4): that end of the front is on the face x0 = 1.
    From an end where the box holds most of f2's descent, a predictor towards f2 could only slide
    along the face, so the member starts afresh instead of tracing towards f2."""
    b = np.array([1.4, 0.6, 0.5])
    problem = Problem(SPACE, {"f1": "min", "f2": "min"})

    def objective(config):
        x = np.array([config[f"x{i}"] for i in range(3)])
        out = {"f1": float(((x - A) ** 2).sum()), "f2": float(((x - b) ** 2).sum())}
        for i in range(3):
            out[grad_key("f1", f"x{i}")] = float(2 * (x[i] - A[i]))
            out[grad_key("f2", f"x{i}")] = float(2 * (x[i] - b[i]))
        return out

    strategy = JacobianStrategy(seed=0, population=3, source="hypergrad")
    run(strategy, objective, problem, 300)
    ends = strategy.stationary
    held = 0
    for member in range(3):
        mine = [e for e in ends if e["member"] == member]
        for end, after in zip(mine, mine[1:], strict=False):
            x = end["x"]
            g2 = 2 * (x - b)
            free = np.where((x >= 1.0 - 1e-9) & (g2 < 0), 0.0, g2)  # the part the box lets through
            held_by_box = np.linalg.norm(free) <= 0.5 * np.linalg.norm(g2)
            if end["reason"] in ("stationary", "stalled") and held_by_box:
                held += 1
                assert after["trace"] != 1, (x, after)
    assert held >= 2  # the walks do reach that end of the front
    # ... and the population still traces the rest of it: some walks trace towards f2.
    assert any(e["trace"] == 1 for e in ends)


def test_hypergradients_replace_differences_and_match_them():
    space = {"x0": distopt.Float(0.0, 1.0), "x1": distopt.Float(0.05, 1.0, log=True),
             "x2": distopt.Float(0.1, 1.0, off=0.0)}
    problem = Problem(space, {"f1": "min", "f2": "min"})
    with_keys = JacobianStrategy(seed=3, population=2, source="auto", h=1e-3)
    run(with_keys, bowls_with_gradients, problem, 60)
    fd = JacobianStrategy(seed=3, population=2, source="fd", h=1e-3)
    fd_results = run(fd, bowls_with_gradients, problem, 60)
    # Same seed: the first Jacobian of member 0 is taken at the same center by both sources, and
    # the chain rule (linear, log, off band) makes the hypergradient one equal the differences.
    first_keys = next(h for h in with_keys.history if h["member"] == 0)
    first_fd = next(h for h in fd.history if h["member"] == 0)
    np.testing.assert_allclose(first_keys["x"], first_fd["x"])
    cont = [j for j in range(3) if np.any(first_fd["jacobian"][:, j])]
    assert cont, "member 0 has no continuous coordinate"
    np.testing.assert_allclose(first_keys["jacobian"][:, cont], first_fd["jacobian"][:, cont],
                               rtol=2e-2, atol=1e-4)
    # Hypergradients need no perturbed trials: many more steps for the same number of trials.
    steps_keys = sum(h["accepted"] is not None for h in with_keys.history)
    steps_fd = sum(h["accepted"] is not None for h in fd.history)
    assert steps_keys > 2 * steps_fd
    assert len(fd_results) == 60


def test_forward_differences_take_one_trial_per_coordinate():
    problem = Problem(SPACE, {"f1": "min", "f2": "min"})
    central = JacobianStrategy(seed=3, population=2, source="fd", h=1e-3)
    run(central, bowls, problem, 60)
    forward = JacobianStrategy(seed=3, population=2, source="fd", h=1e-3, differences="forward")
    results = run(forward, bowls, problem, 60)
    first_central = next(h for h in central.history if h["member"] == 0)
    first_forward = next(h for h in forward.history if h["member"] == 0)
    np.testing.assert_allclose(first_forward["x"], first_central["x"])
    # Exact for a linear function; on these quadratics the bias is h times the curvature (2).
    np.testing.assert_allclose(first_forward["jacobian"], first_central["jacobian"], atol=3e-3)
    # Each perturbed trial moves one coordinate by +h (or -h at an upper bound) from a center.
    encoded = problem.space.encode([r.config for r in results])
    centers = {tuple(np.round(h["x"], 6)) for h in forward.history}
    for point in encoded:
        nearest = min(centers, key=lambda c: np.abs(point - np.array(c)).sum())
        moved = np.abs(point - np.array(nearest)) > 1e-6
        if moved.sum() == 1:  # a difference trial: never on the minus side of an inner center
            j = int(np.argmax(moved))
            assert point[j] > nearest[j] or nearest[j] + 1e-3 > 1.0
    # Half the perturbed trials per Jacobian: more Jacobians (and steps) in the same budget.
    steps_forward = sum(h["accepted"] is not None for h in forward.history)
    steps_central = sum(h["accepted"] is not None for h in central.history)
    assert steps_forward > steps_central


def test_broyden_updates_stand_in_for_differences_between_refreshes():
    problem = Problem(SPACE, {"f1": "min", "f2": "min"})
    plain = JacobianStrategy(seed=3, population=2, source="fd", broyden=0)
    run(plain, bowls, problem, 120)
    updating = JacobianStrategy(seed=3, population=2, source="fd", broyden=2)
    results = run(updating, bowls, problem, 120)
    values = {tuple(np.round([r.config[f"x{i}"] for i in range(3)], 6)):
              np.array([r.metrics["f1"], r.metrics["f2"]]) for r in results}

    def value(x):
        return values[tuple(np.round(x, 6))]

    # Fewer difference trials: more decisions and more walk ends in the same 120 trials.
    assert len(updating.history) > len(plain.history)
    assert len(updating.stationary) > len(plain.stationary)
    walks: dict[int, list[dict]] = {}
    for entry in updating.history:
        walks.setdefault(entry["member"], []).append(entry)
    secants = refreshes = 0
    for entries in walks.values():
        in_a_row, last = 0, None
        for before, entry in zip([None, *entries], entries, strict=False):
            new_center = last is None or not np.allclose(entry["x"], last)
            in_a_row = (in_a_row + 1 if new_center else in_a_row) if entry["updated"] else 0
            assert in_a_row <= 2  # then the differences are measured again
            last = entry["x"]
            if before is None:
                continue
            if before["accepted"] and entry["updated"] and \
                    np.allclose(entry["x"], before["x"] + before["step"]):
                # The update agrees exactly with the change the accepted step measured.
                np.testing.assert_allclose(entry["jacobian"] @ before["step"],
                                           value(entry["x"]) - value(before["x"]),
                                           rtol=1e-6, atol=1e-9)
                secants += 1
            if before["accepted"] is False and before["updated"] and \
                    entry["restart"] == before["restart"]:
                # A rejected step from an updated Jacobian: measured afresh at the same center.
                assert not entry["updated"]
                np.testing.assert_allclose(entry["x"], before["x"])
                refreshes += 1
    assert secants and refreshes
    # Ends judged on a measured Jacobian are Pareto-stationary (on the segment); those judged on
    # an update are flagged as estimates.
    ends = [e for e in updating.stationary if e["reason"] == "stationary"]
    measured = [e for e in ends if not e["updated"]]
    assert measured and all(distance_to_segment(e["x"]) < 0.02 for e in measured)
    assert all(not e["updated"] for e in plain.stationary)


def test_violated_constraint_joins_the_rows_until_it_holds():
    # g = x0 + x1 + x2 <= 1.0 cuts the segment (sums 0.9 at a, 1.8 at b) and most of the cube.
    problem = Problem(SPACE, {"f1": "min", "f2": "min"}, {"g": ("<=", 1.0)})
    strategy = JacobianStrategy(seed=2, population=4)
    results = run(strategy, bowls, problem, 300)
    walks: dict[tuple[int, int], list[dict]] = {}
    for entry in strategy.history:
        walks.setdefault((entry["member"], entry["restart"]), []).append(entry)
    started_infeasible = [w for w in walks.values() if w[0]["x"].sum() > 1.0 + 1e-9]
    assert started_infeasible, "no walk started with the constraint violated"
    for walk in started_infeasible:
        assert "g" in walk[0]["rows"]
        moved = [e["x"] + e["step"] for e in walk if e["accepted"]]
        if moved:
            assert moved[-1].sum() < walk[0]["x"].sum()  # the slack went down
        accepted = [e for e in walk if e["accepted"] and "g" in e["rows"]]
        for entry in accepted:  # while violated, no step worsened the constraint to first order
            assert (entry["jacobian"][entry["rows"].index("g")] @ entry["step"]) <= 1e-9
    reached = [w for w in started_infeasible if any(e["x"].sum() <= 1.0 + 1e-6 for e in w)]
    assert reached, "no infeasible walk became feasible"
    feasible_ends = [e for e in strategy.stationary if e["reason"] == "stationary"
                     and e["values"]["g"] <= 1.0 + 1e-6]
    assert feasible_ends
    assert sum(problem.feasible([r.metrics])[0] for r in results) > 20


@pytest.mark.parametrize(("source", "n_initial", "broyden"),
                         [("fd", None, 0), ("fd", None, 2), ("auto", None, 0), ("auto", 8, 0)])
def test_restart_from_a_store_rebuilds_the_same_state(source, n_initial, broyden):
    problem = Problem(SPACE, {"f1": "min", "f2": "min"}, {"g": ("<=", 1.4)})
    objective = bowls_with_gradients if source == "auto" else bowls
    options = {"seed": 5, "population": 3, "source": source, "n_initial": n_initial,
               "broyden": broyden}
    live = JacobianStrategy(**options)
    results = run(live, objective, problem, 120, batch=4, shuffle_seed=0)
    if broyden:
        assert any(e["updated"] for e in live.history)

    rebuilt = JacobianStrategy(**options)
    rebuilt.bind(problem)
    shuffled = list(results)
    random.Random(1).shuffle(shuffled)
    rebuilt.tell(shuffled[:50])
    rebuilt.tell(shuffled[50:])
    assert rebuilt.state() == live.state()
    np.testing.assert_array_equal(rebuilt.centers(), live.centers())
    def ends(strategy):
        return sorted((e["member"], e["restart"], e["reason"], tuple(e["x"]))
                      for e in strategy.stationary)

    assert ends(rebuilt) == ends(live)
    # Both go on identically: the same proposals, none of them already run.
    seen = {tuple(sorted(r.config.items())) for r in results}
    # In flight when the study stopped: the orchestrator passes them as pending.
    running = live.running
    asked_live, asked_rebuilt = live.ask(4, running), rebuilt.ask(4, running)
    assert asked_live == asked_rebuilt
    assert not seen & {tuple(sorted(c.items())) for c in asked_live}
    # Telling the same results again (a resume replaying trials told live) changes nothing.
    before = live.state()
    live.tell(results)
    assert live.state() == before


def test_initial_design_then_walks_from_its_best_spread_points():
    problem = Problem(SPACE, {"f1": "min", "f2": "min"})
    strategy = JacobianStrategy(seed=0, population=3, n_initial=10)
    strategy.bind(problem)
    design = strategy.ask(10)  # the whole design can run at once
    assert all(m.phase == "wait" for m in strategy.members)
    results = [TrialResult(i, c, "COMPLETE", bowls(c)) for i, c in enumerate(design)]
    strategy.tell(results[:9])
    assert all(m.phase == "wait" for m in strategy.members)  # walks start once all have run
    strategy.tell(results[9:])
    starts = [tuple(np.round(m.x, 6)) for m in strategy.members]
    values = np.array([[r.metrics["f1"], r.metrics["f2"]] for r in results])
    by_point = {tuple(np.round([c[f"x{i}"] for i in range(3)], 6)): v
                for c, v in zip(design, values, strict=True)}
    from distopt import pareto

    front = {tuple(v) for v in values[pareto.is_non_dominated(values)]}
    chosen = [tuple(by_point[p]) for p in starts]
    assert len(set(starts)) == 3
    # Non-dominated points first (as many as there are), starting with the best f1.
    assert all(v in front for v in chosen[:min(3, len(front))])
    assert chosen[0] == min(front)
    # Every member then walks from its start: the next asks are new points near the starts.
    assert len(strategy.ask(3)) == 3


def test_a_trace_heads_for_the_end_of_the_front_it_is_farthest_from():
    problem = Problem(SPACE, {"f1": "min", "f2": "min"})
    strategy = JacobianStrategy(seed=1, population=3, n_initial=10, source="hypergrad")
    results = run(strategy, bowls_with_gradients, problem, 150)
    from distopt import pareto

    design = np.array([[r.metrics["f1"], r.metrics["f2"]] for r in results[:10]])
    front = design[pareto.is_non_dominated(design)]
    low, span = front.min(axis=0), front.max(axis=0) - front.min(axis=0)
    checked = set()
    for member in range(3):
        mine = [e for e in strategy.stationary if e["member"] == member]
        for end, after in zip(mine, mine[1:], strict=False):
            # A walk from a fresh start that ended on the front starts a new trace.
            if end["trace"] == -1 and end["reason"] in ("stationary", "stalled") and \
                    after["trace"] >= 0:
                room = (np.array([end["values"]["f1"], end["values"]["f2"]]) - low) / span
                assert after["trace"] == int(np.argmax(room)), (room, after["trace"])
                checked.add(after["trace"])
    assert checked == {0, 1}  # ends near either extreme of the front head for the other


def test_asks_fill_every_worker_without_duplicates():
    problem = Problem(SPACE, {"f1": "min", "f2": "min"})
    strategy = JacobianStrategy(seed=0, population=2, n_initial=2)  # walks start at once
    strategy.bind(problem)
    first = strategy.ask(2)
    # Each center's central differences run beside it (2 members x 6 perturbations), then fillers.
    more = strategy.ask(20, pending=first)
    keys = {tuple(sorted(c.items())) for c in first + more}
    assert len(keys) == 22
    assert strategy.ask(3, pending=first + more)  # fillers from a second Sobol sequence
    # The perturbed trials differ from their center in one coordinate by h.
    center = np.array([first[0][f"x{i}"] for i in range(3)])
    near = [c for c in more if np.sum(~np.isclose([c[f"x{i}"] for i in range(3)], center)) == 1]
    assert len(near) == 6


def test_fixed_coordinates_and_seed_stay_equal_across_a_members_trials():
    space = {"x0": distopt.Float(0.0, 1.0), "x1": distopt.Float(0.0, 1.0),
             "x2": distopt.Float(0.0, 1.0), "width": distopt.Int(8, 64, log=True),
             "act": distopt.Categorical(["relu", "tanh"]), "seed": 7}
    problem = Problem(space, {"f1": "min", "f2": "min"})
    strategy = JacobianStrategy(seed=4, population=2)
    strategy.bind(problem)
    by_member: dict[int, set] = {}
    trial = 0
    for _ in range(60):
        config = strategy.ask(1)[0]
        owner = [m.index for m in strategy.members if m.restarts == 0]
        assert config["seed"] == 7
        strategy.tell([TrialResult(trial, config, "COMPLETE", bowls(config))])
        trial += 1
        for member in strategy.members:  # members without a position are still in the design
            if member.restarts == 0 and member.index in owner and len(member.x):
                by_member.setdefault(member.index, set()).add(
                    (problem.space.decode(member.x[None])[0]["width"],
                     problem.space.decode(member.x[None])[0]["act"]))
    assert len(by_member) == 2 and all(len(values) == 1 for values in by_member.values())


def test_failed_trials_reseed_or_reject_and_the_search_goes_on():
    problem = Problem(SPACE, {"f1": "min", "f2": "min"})
    strategy = JacobianStrategy(seed=0, population=2)
    strategy.bind(problem)
    for trial in range(80):
        config = strategy.ask(1)[0]
        if trial % 7 == 3:
            result = TrialResult(trial, config, "FAILED", {})
        else:
            result = TrialResult(trial, config, "COMPLETE", bowls(config))
        strategy.tell([result])
    assert any(h["accepted"] for h in strategy.history)


def test_registry_options_and_validation():
    strategy = make_strategy({"name": "jacobian", "options": {"population": 3, "source": "fd"}},
                             seed=2)
    assert isinstance(strategy, JacobianStrategy)
    assert strategy.population == 3 and strategy.seed == 2
    for options in ({"population": 0}, {"source": "magic"}, {"h": 0.0}, {"lr": 2.0},
                    {"armijo": -1.0}, {"grow": 0.5}, {"max_steps": 0}, {"n_initial": 2},
                    {"reseed": "nowhere"}, {"trace_step": 0.0}, {"ptol": -1},
                    {"differences": "backward"}, {"broyden": -1}, {"broyden": True},
                    {"broyden": 1.5}, {"precondition": 0.5}, {"precondition": math.inf},
                    {"precondition": True}):
        with pytest.raises(ConfigError):
            make_strategy({"name": "jacobian", "options": options})
    with pytest.raises(ConfigError):
        make_strategy({"name": "jacobian", "options": {"nonsense": 1}})


def test_max_steps_and_spaces_without_continuous_coordinates(caplog):
    problem = Problem({"k": distopt.Int(0, 9), "c": distopt.Categorical(["a", "b"])},
                      {"f1": "min", "f2": "min"})
    strategy = JacobianStrategy(seed=0, population=2)
    with caplog.at_level(logging.WARNING, logger="distopt"):
        strategy.bind(problem)
    assert [r.getMessage() for r in caplog.records] == [
        "distopt: jacobian walks Float parameters and this space has none, so every trial is a "
        "Sobol point; strategy random, pareto or bayes suits it"]
    configs = []
    for trial in range(24):  # 20 configurations: on past the point where every one is known
        config = strategy.ask(1)[0]
        configs.append(config)
        strategy.tell([TrialResult(trial, config, "COMPLETE",
                                   {"f1": float(config["k"]), "f2": 9.0 - config["k"]})])
    assert all(e["reason"] == "fixed" for e in strategy.stationary)
    keys = [tuple(sorted(c.items())) for c in configs]
    assert len(set(keys[:20])) == 20  # every configuration once before any repeats
    # the starts cycle through known configurations: the members rest instead of looping
    assert {m.phase for m in strategy.members} == {"rest"}


@pytest.mark.slow
def test_study_end_to_end_on_ray(ray_local, tmp_path):
    study = distopt.Study(
        space={"x": distopt.Float(-0.5, 1.5), "y": distopt.Float(-1.0, 1.0), "epochs": 1},
        objectives={"f1": "min", "f2": "min"}, strategy={"name": "jacobian",
                                                          "options": {"population": 2}},
        store=tmp_path / "store", seed=0)
    reader = study.optimize(two_bowls, budget=20, workers=2)
    trials = reader.trials()
    assert trials.num_rows == 20
    assert set(trials["status"].to_pylist()) == {"COMPLETE"}
    # Resuming rebuilds the strategy from the store and goes on to the new budget.
    study = distopt.Study(
        space={"x": distopt.Float(-0.5, 1.5), "y": distopt.Float(-1.0, 1.0), "epochs": 1},
        objectives={"f1": "min", "f2": "min"}, strategy={"name": "jacobian",
                                                          "options": {"population": 2}},
        store=tmp_path / "store", seed=0)
    reader = study.optimize(two_bowls, budget=26, workers=2)
    assert reader.trials().num_rows == 26
    assert math.isfinite(reader.hypervolume())
