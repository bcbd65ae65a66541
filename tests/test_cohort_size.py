"""How large a cohort a batched objective gets: the device's free memory, ``max_size`` and the
study's ``cohort_size``."""

from __future__ import annotations

import pytest

import distopt
from distopt import ConfigError
from distopt.cohort import BatchSpec

MiB = 2 ** 20


def test_the_memory_figure_is_capped_by_max_size_only():
    """It used to be capped at the default of 16 too: 80 GiB free, 40 MiB a member gave 16."""
    free = 80 * 1024 * MiB
    assert BatchSpec(memory_per_member=40 * MiB).size_for(free, 16) == 1638
    assert BatchSpec(max_size=256, memory_per_member=40 * MiB).size_for(free, 16) == 256
    assert BatchSpec(memory_per_member=40 * MiB).size_for(200 * MiB, 16) == 4
    assert BatchSpec(memory_per_member=400 * MiB).size_for(100 * MiB, 16) == 1
    assert BatchSpec(memory_per_member=40 * MiB).size_for(None, 16) == 16  # a CPU: unknown
    assert BatchSpec(max_size=8).size_for(free, 16) == 8
    assert BatchSpec().size_for(free, 16) == 16


@pytest.mark.parametrize("memory", ["40MB", 4e7, True])
def test_memory_per_member_is_a_whole_number_of_bytes(memory):
    with pytest.raises(ConfigError, match=r"^batched\.memory_per_member: must be a whole number "
                                          r"of bytes; got .*; e\.g\. 40 << 20 for 40 MiB$"):
        distopt.batched(memory_per_member=memory)
    with pytest.raises(ConfigError, match=r"^batched\.memory_per_member: must be an int >= 1"):
        distopt.batched(memory_per_member=0)


def test_a_cohort_size_above_max_size_is_refused_before_anything_is_written(tmp_path):
    @distopt.batched(max_size=4)
    def objective(configs):
        return [{"f1": c["x"], "f2": 1 - c["x"]} for c in configs]

    study = distopt.Study({"x": distopt.Float(0, 1)}, {"f1": "min", "f2": "min"},
                          store=tmp_path / "s")
    with pytest.raises(ConfigError, match=r"^cohort_size: 10 is more than the objective's "
                                          r"max_size of 4; lower cohort_size to 4 or less"):
        study.optimize(objective, budget=8, cohort_size=10)
    assert not (tmp_path / "s").exists()
