"""Multi-node scenarios on a real Ray cluster on this machine; prints one JSON object.

Run by ``test_multinode.py`` in a subprocess (it cannot share the test session's Ray)::

    python tests/cluster/multinode_scenarios.py spread gpu node_loss

The cluster: a head with 1 CPU (the driver), worker node A with 2 CPUs and 2 ``trainer`` slots,
worker node B with 2 CPUs, 1 (fake) GPU and 2 ``trainer`` slots. Each scenario runs a real
``distopt.Study.optimize(..., address=cluster.address)`` into its own store and reports the trial
table; the test asserts on it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time

import ray
from ray.cluster_utils import Cluster

import distopt
from distopt.strategies import RandomStrategy


class OneAtATime(RandomStrategy):
    """Random search with one trial per worker (nothing queued behind it), so that a node's
    death is charged to exactly the trial that was running there."""

    queue_depth = 1


def sleepy(config):
    """Sleeps ``config['sleep']`` s; reports whether Ray gave the process a GPU."""
    start = time.time()
    for step in range(3):
        time.sleep(config["sleep"] / 3)
        distopt.report(step=step, progress=(step + 1) / 3)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return {"loss": config["x"], "cost": 1 - config["x"], "has_gpu": float(visible != ""),
            "pid": float(os.getpid()), "t0": start, "t1": time.time()}


def study(path, sleep, strategy="random"):
    return distopt.Study({"x": distopt.Float(0.0, 1.0), "sleep": sleep},
                         {"loss": "min", "cost": "min"}, store=path, seed=1, strategy=strategy)


def trials(reader):
    table = reader.trials()
    return table.select(["trial_id", "status", "attempts", "node_id", "worker", "has_gpu", "t0",
                         "t1", "error"]).to_pylist()


def spread(cluster, nodes, root):
    """4 workers asking a ``trainer`` slot each: 2 on A, 2 on B, none on the head."""
    reader = study(f"{root}/spread", 0.6).optimize(
        sleepy, budget=8, workers=4, resources_per_trial={"cpu": 0.5, "trainer": 1},
        address=cluster.address)
    return {"trials": trials(reader)}


def gpu(cluster, nodes, root):
    """4 workers at 0.25 GPU each: all packed on B's one GPU, running at the same time once all
    four have started (the first trials go to whichever workers are up first)."""
    reader = study(f"{root}/gpu", 2.0).optimize(
        sleepy, budget=12, workers=4, resources_per_trial={"cpu": 0.25, "gpu": 0.25},
        address=cluster.address)
    return {"trials": trials(reader)}


def node_loss(cluster, nodes, root):
    """2 workers (one per node, SPREAD); node A is removed while its trial runs."""
    removed = {}

    def remove_when_busy():
        path = f"{root}/node_loss"
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until a trial has run on A and the next one started
            time.sleep(0.2)
            try:
                done = distopt.open_store(path).trials()
            except Exception:
                continue
            if nodes["A"] in done["node_id"].to_pylist():
                time.sleep(0.8)  # A's next trial is now mid-way
                removed["at"] = time.time()
                cluster.remove_node(nodes["A_node"], allow_graceful=False)
                return

    killer = threading.Thread(target=remove_when_busy, daemon=True)
    killer.start()
    reader = study(f"{root}/node_loss", 2.0, OneAtATime(seed=1)).optimize(
        sleepy, budget=8, workers=2, resources_per_trial={"cpu": 1, "trainer": 1},
        address=cluster.address, max_retries=3)
    killer.join(timeout=5)
    return {"trials": trials(reader), "removed_at": removed.get("at"),
            "dispatched": reader.dispatched().select(["trial_id", "attempt"]).to_pylist()}


def no_room(cluster, nodes, root):
    """2 workers on the one GPU node (half a GPU each); the node is removed mid-trial, so no
    replacement can be placed anywhere. Run last: it leaves no worker node."""
    from distopt import _pool

    _pool.START_TIMEOUT = 8.0  # the default (180 s) makes a slow test
    path = f"{root}/no_room"

    def remove_when_busy():
        deadline = time.time() + 60
        while time.time() < deadline:
            time.sleep(0.2)
            try:
                if distopt.open_store(path).trials().num_rows >= 2:
                    time.sleep(0.8)
                    cluster.remove_node(nodes["B_node"], allow_graceful=False)
                    return
            except Exception:
                continue

    killer = threading.Thread(target=remove_when_busy, daemon=True)
    killer.start()
    began = time.time()
    try:
        study(path, 2.0, OneAtATime(seed=1)).optimize(
            sleepy, budget=12, workers=2, resources_per_trial={"cpu": 0.5, "gpu": 0.5},
            address=cluster.address, max_retries=3)
        error = None
    except distopt.DistoptError as caught:
        error = str(caught)
    killer.join(timeout=5)
    return {"error": error, "waited": time.time() - began,
            "trials": trials(distopt.open_store(path))}


def cli(cluster, nodes, root):
    """The README's route: ``distopt run study.yaml --address auto`` in another process, which
    finds the cluster through RAY_ADDRESS (as on a head node or in a Ray job)."""
    import subprocess

    study_file = f"{root}/study.yaml"
    with open(study_file, "w") as handle:
        json.dump({"objective": "distopt.examples:two_bowls",
                   "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}, "epochs": 2},
                   "objectives": {"f1": "min", "f2": "min"}, "budget": 6, "workers": 2,
                   "resources_per_trial": {"cpu": 0.5, "trainer": 1}}, handle)  # JSON is YAML
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    proc = subprocess.run([sys.executable, "-m", "distopt", "run", study_file, "--address", "auto",
                           "--store", f"{root}/cli", "--no-progress"],
                          capture_output=True, text=True, timeout=180, env=env)
    out = {"rc": proc.returncode, "stdout": proc.stdout[-2000:], "stderr": proc.stderr[-2000:]}
    if proc.returncode == 0:
        out["trials"] = trials_of_cli(distopt.open_store(f"{root}/cli"))
    return out


def trials_of_cli(reader):
    return reader.trials().select(["trial_id", "status", "node_id"]).to_pylist()


def joining(cluster, nodes, root):
    """3 workers asking a ``joiner`` slot, which no node has at the start (as on an autoscaling
    cluster): node C (1 slot) arrives after 2 s, node D (2 slots) once 3 trials are done. The
    search starts on C alone and takes D's workers when they come up. The search runs in a
    thread: Ray starts a node's processes from the main thread only."""
    path = f"{root}/joining"
    added, result = {}, {}

    def search():
        try:
            result["reader"] = study(path, 2.0, OneAtATime(seed=1)).optimize(
                sleepy, budget=14, workers=3, resources_per_trial={"cpu": 0.5, "joiner": 1},
                address=cluster.address)
        except BaseException as error:  # reported by the test
            result["error"] = repr(error)

    searcher = threading.Thread(target=search, daemon=True)
    began = time.time()
    searcher.start()
    time.sleep(2.0)
    added["C_at"] = time.time()
    added["C"] = cluster.add_node(num_cpus=1, resources={"joiner": 1}).node_id
    deadline = time.time() + 90
    while time.time() < deadline and searcher.is_alive():
        time.sleep(0.2)
        try:
            if distopt.open_store(path).trials().num_rows >= 3:
                break
        except Exception:
            continue
    added["D_at"] = time.time()
    added["D"] = cluster.add_node(num_cpus=2, resources={"joiner": 2}).node_id
    searcher.join(timeout=240)
    if "reader" not in result:
        return {"error": result.get("error", "the search did not end"), "trials": [],
                "began": began, **added}
    return {"trials": trials(result["reader"]), "began": began, **added}


SCENARIOS = {"spread": spread, "gpu": gpu, "cli": cli, "node_loss": node_loss,
             "joining": joining, "no_room": no_room}


def main(names):
    started = time.time()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node_a = cluster.add_node(num_cpus=2, resources={"trainer": 2})
    node_b = cluster.add_node(num_cpus=2, num_gpus=1, resources={"trainer": 2})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    nodes = {"head": cluster.head_node.node_id, "A": node_a.node_id, "B": node_b.node_id,
             "A_node": node_a, "B_node": node_b}
    out = {"nodes": {k: v for k, v in nodes.items() if isinstance(v, str)},
           "setup_seconds": time.time() - started}
    root = tempfile.mkdtemp(prefix="distopt-cluster-")
    try:
        for name in names:
            began = time.time()
            out[name] = SCENARIOS[name](cluster, nodes, root)
            out[name]["seconds"] = time.time() - began
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    print("RESULT " + json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1:] or list(SCENARIOS))
