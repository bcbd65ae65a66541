"""Searches on a real three-node Ray cluster (head + 2 workers, one with a GPU) on this machine.

The cluster cannot share the session's Ray, so ``multinode_scenarios.py`` builds it with
``ray.cluster_utils.Cluster`` in a subprocess, runs the three scenarios one after another on it
(about 50 s in all) and prints the trial tables as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("multinode_scenarios.py")


@pytest.fixture(scope="module")
def cluster_run():
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "PYTHONPATH": os.pathsep.join(
        [str(SCRIPT.parents[2]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(SCRIPT), "spread", "gpu", "cli", "node_loss",
                           "joining", "no_room"],
                          capture_output=True, text=True, timeout=420, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"scenario script failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-5000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def test_trials_spread_over_the_worker_nodes_that_have_the_custom_resource(cluster_run):
    nodes = cluster_run["nodes"]
    trials = cluster_run["spread"]["trials"]
    assert len(trials) == 8 and {t["status"] for t in trials} == {"COMPLETE"}
    per_node = Counter(t["node_id"] for t in trials)
    # The head has no "trainer" resource: no trial there; both workers got some.
    assert set(per_node) == {nodes["A"], nodes["B"]}, per_node
    assert min(per_node.values()) >= 2
    # 4 workers on 2 nodes: 2 actors per node, each a distinct worker slot.
    workers_per_node = {n: {t["worker"] for t in trials if t["node_id"] == n} for n in per_node}
    assert all(len(w) == 2 for w in workers_per_node.values()), workers_per_node


def test_quarter_gpu_trials_pack_four_at_once_on_the_one_gpu_node(cluster_run):
    nodes = cluster_run["nodes"]
    trials = cluster_run["gpu"]["trials"]
    assert len(trials) == 12 and {t["status"] for t in trials} == {"COMPLETE"}
    assert {t["node_id"] for t in trials} == {nodes["B"]}  # the only node with a GPU
    assert all(t["has_gpu"] == 1.0 for t in trials)       # Ray set CUDA_VISIBLE_DEVICES
    assert len({t["worker"] for t in trials}) == 4
    # Each trial sleeps 2 s. Workers get trials as soon as they are up, so under load the first
    # ones may run before the last worker has started; once all four are up, four trials share
    # an instant on the one GPU.
    running_at = [sum(u["t0"] <= t["t0"] < u["t1"] for u in trials) for t in trials]
    assert max(running_at) == 4, [(t["worker"], t["t0"], t["t1"]) for t in trials]
    assert len({t["worker"] for t in trials}) == 4


def test_distopt_run_address_auto_joins_the_cluster(cluster_run):
    """`distopt run study.yaml --address auto`, as the README shows, from another process."""
    nodes = cluster_run["nodes"]
    run = cluster_run["cli"]
    assert run["rc"] == 0, run["stderr"]
    assert "Pareto front" in run["stdout"]
    trials = run["trials"]
    assert len(trials) == 6 and {t["status"] for t in trials} == {"COMPLETE"}
    assert {t["node_id"] for t in trials} <= {nodes["A"], nodes["B"]}  # not the head


def test_removing_a_node_mid_search_reruns_its_trial_elsewhere(cluster_run):
    nodes = cluster_run["nodes"]
    run = cluster_run["node_loss"]
    trials = run["trials"]
    removed_at = run["removed_at"]
    assert removed_at is not None, "the node was never removed"
    ids = [t["trial_id"] for t in trials]
    assert sorted(ids) == list(range(8)), ids                # budget met, ids unique
    assert {t["status"] for t in trials} == {"COMPLETE"}, [t["error"] for t in trials]
    moved = [t for t in trials if t["attempts"] > 1]
    assert moved, "no trial was re-run after the node was removed"
    for trial in moved:
        assert trial["node_id"] == nodes["B"]                # re-run on the surviving node
        assert trial["t0"] > removed_at                      # that run began after the removal
    # Nothing finished on A after it was removed.
    assert all(t["t1"] < removed_at for t in trials if t["node_id"] == nodes["A"])
    assert any(t["node_id"] == nodes["A"] for t in trials)   # A did work before it went
    dispatches = Counter(d["trial_id"] for d in run["dispatched"])
    assert all(dispatches[t["trial_id"]] >= 2 for t in moved)
    attempts = {(d["trial_id"], d["attempt"]) for d in run["dispatched"]}
    assert all((t["trial_id"], t["attempts"]) in attempts for t in moved)


def test_losing_every_worker_with_no_room_to_replace_them_stops_with_a_clear_error(cluster_run):
    run = cluster_run["no_room"]
    assert run["error"] is not None, "the search did not stop"
    assert "no worker could be restarted" in run["error"] and "distopt resume" in run["error"]
    assert run["waited"] < 120                     # START_TIMEOUT is 8 s in the scenario
    finished = [t for t in run["trials"] if t["status"] == "COMPLETE"]
    assert len(finished) >= 2 and len(run["trials"]) < 12   # kept in the store, budget not met


def test_workers_join_as_nodes_arrive_and_the_search_never_waits_for_all(cluster_run):
    run = cluster_run["joining"]
    assert "error" not in run, run.get("error")
    trials = run["trials"]
    assert sorted(t["trial_id"] for t in trials) == list(range(14))     # budget met, ids unique
    assert {t["status"] for t in trials} == {"COMPLETE"}, [t["error"] for t in trials]
    assert all(t["t0"] > run["C_at"] for t in trials)           # nothing ran before a node came
    on_c = [t for t in trials if t["node_id"] == run["C"]]
    on_d = [t for t in trials if t["node_id"] == run["D"]]
    assert on_c and on_d, trials                                 # both nodes worked
    assert min(t["t0"] for t in on_c) < run["D_at"]             # C started before D existed
    assert all(t["t0"] > run["D_at"] for t in on_d)             # D's workers joined mid-search
    assert len({t["worker"] for t in on_d}) == 2                # both of D's slots were used
