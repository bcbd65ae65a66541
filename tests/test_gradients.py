"""The hypergradient key scheme, shared by the objectives that write keys and the strategies
that read them."""

from __future__ import annotations

from distopt.gradients import GRAD_PREFIX, grad_key, parse_grad_key
from objectives import hypergrad


def test_key_scheme_round_trips():
    assert grad_key("m", "p").startswith(GRAD_PREFIX)
    assert grad_key("equiv_err.rotation", "lam.rotation") == "grad/equiv_err.rotation/lam.rotation"
    assert parse_grad_key("grad/equiv_err.rotation/lam.rotation") == ("equiv_err.rotation",
                                                                      "lam.rotation")
    assert parse_grad_key("grad/a/b/lam.x") == ("a/b", "lam.x")
    assert parse_grad_key("test_mse") is None
    assert parse_grad_key("grad/onlymetric") is None


def test_the_objectives_write_keys_by_the_same_scheme():
    assert hypergrad.grad_key is grad_key and hypergrad.parse_grad_key is parse_grad_key
