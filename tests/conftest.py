"""Shared fixtures: one local Ray for the whole session (starting Ray costs 2-3 s)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 4 logical CPUs and no dashboard, shared by every test that names it."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                     [os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}})
    yield ray
    ray.shutdown()
