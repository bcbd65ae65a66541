"""The cluster configs in clusters/ parse and carry what Ray, KubeRay and distopt need."""

from __future__ import annotations

import re
import shlex
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ROOT / "clusters"
RAY_VERSION = metadata.version("ray")


def load(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((CLUSTERS / name).read_text()) if doc]


# -- cluster launcher ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def launcher() -> dict:
    (config,) = load("aws-gpu.yaml")
    return config


def test_launcher_config_passes_rays_own_schema_and_checks(launcher):
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(launcher)  # merges the provider's defaults, as `ray up` does
    validate_config(prepared)            # Ray's JSON schema plus its cross-field checks
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_launcher_has_a_cpu_head_and_autoscaling_gpu_workers(launcher):
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    assert head["resources"].get("CPU") == 0           # the head runs the driver, not trials
    workers = {name: t for name, t in types.items() if name != launcher["head_node_type"]}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu, "no worker type declares a GPU"
    assert all(t["min_workers"] < t["max_workers"] <= launcher["max_workers"] for t in gpu)
    assert launcher["provider"]["type"] in {"aws", "gcp", "azure"}


def test_launcher_installs_distopt_and_starts_ray_on_every_node(launcher):
    assert any("pip install" in c and "distopt" in c for c in launcher["setup_commands"])
    assert "." in launcher["file_mounts"].values()    # the repository, synced from `ray up`'s cwd
    head = " ".join(launcher["head_start_ray_commands"])
    worker = " ".join(launcher["worker_start_ray_commands"])
    assert "ray start --head" in head and "--port=6379" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "0.0.0.0" not in head                     # dashboard only through an SSH tunnel
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
    assert launcher["docker"]["image"] == f"rayproject/ray:{RAY_VERSION}-py311-gpu"


# -- KubeRay --------------------------------------------------------------------------------------

def _check_ray_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == RAY_VERSION
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    # Inside the pod network the dashboard must listen on the pod's address; the Service that
    # exposes it stays cluster-internal.
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    (container,) = head["template"]["spec"]["containers"]
    ports = {p["containerPort"] for p in container["ports"]}
    assert {6379, 8265, 10001} <= ports                  # GCS, dashboard/jobs, Ray client
    mounts = {m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in head["template"]["spec"]["volumes"]}
    assert mounts <= volumes                             # the store's volume is defined
    (group,) = spec["workerGroupSpecs"]
    assert group["groupName"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] > group["minReplicas"]
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    images = {container["image"], worker["image"]}
    assert len(images) == 1                              # head and workers: one image


def test_raycluster_manifest():
    docs = load("kuberay/raycluster.yaml")
    kinds = {d["kind"]: d for d in docs}
    cluster = kinds["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["metadata"]["name"]
    _check_ray_cluster_spec(cluster["spec"])
    claim = kinds["PersistentVolumeClaim"]
    volumes = cluster["spec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    assert claim["metadata"]["name"] in {v["persistentVolumeClaim"]["claimName"] for v in volumes}


def test_rayjob_runs_distopt_on_an_existing_study_file():
    (job,) = load("kuberay/rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    _check_ray_cluster_spec(spec["rayClusterSpec"])
    yaml.safe_load(spec["runtimeEnvYAML"])
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["distopt", "run"]
    from distopt.cli import _parser

    args = _parser().parse_args(argv[1:])                # the CLI accepts every flag
    assert args.address == "auto"
    assert (ROOT / args.study).is_file()
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert any(args.store.startswith(m["mountPath"]) for m in head["volumeMounts"])


def test_dockerfile_image_matches_the_manifests():
    text = (CLUSTERS / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(RAY_VERSION)}-py\d+-gpu$", text, re.M)
    assert re.search(r"^RUN pip install .*-e \.", text, re.M)
    image = load("kuberay/raycluster.yaml")[0]["spec"]["headGroupSpec"]["template"]["spec"][
        "containers"][0]["image"]
    assert image in text                                  # the build command names it


def test_readme_shows_both_routes():
    readme = (ROOT / "README.md").read_text() + (CLUSTERS / "README.md").read_text()
    assert "distopt run searchspaces/studies/quickstart.yaml --address auto" in readme
    assert "ray job submit --address http://HEAD:8265 --working-dir . --" in readme
    for name in ("aws-gpu.yaml", "raycluster.yaml", "rayjob.yaml"):
        assert name in readme
