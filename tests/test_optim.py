"""``train.optimizer``: timm's factory and MUD, whose update is checked against explicit algebra."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mae_dbp.bench.host_reads import HostReads
from mae_dbp.config import load_config
from mae_dbp.errors import UserInputError
from mae_dbp.optim import Mud, build_optimizer, optimizer_names
from mae_dbp.optim.mud import whiten_rows
from mae_dbp.train.pretrain import PretrainConfig


def mud_reference(theta: np.ndarray, grads: list[np.ndarray], lr: float, beta: float, decay: float,
                  nesterov: bool = True, passes: int = 1, eps: float = 1e-7) -> np.ndarray:
    """MUD on one matrix (any ndim >= 2, flattened to (out, rest)) in float64, written out step by step."""
    shape, theta = theta.shape, theta.reshape(theta.shape[0], -1).copy()
    v = np.zeros_like(theta)
    for grad in grads:
        g = grad.reshape(theta.shape)
        v = beta * v + g
        m = g + beta * v if nesterov else v
        q = m.T if m.shape[0] > m.shape[1] else m
        for _ in range(passes):
            q = q / (np.linalg.norm(q, axis=1, keepdims=True) + eps)
            q = np.linalg.inv(np.tril(q @ q.T)) @ q
            q = q / (np.linalg.norm(q, axis=1, keepdims=True) + eps)
        q = q.T if m.shape[0] > m.shape[1] else q
        theta = theta * (1 - lr * decay) - lr * 0.2 * np.sqrt(max(theta.shape)) * q
    return theta.reshape(shape)


@pytest.mark.parametrize("shape, nesterov, passes", [((6, 4), True, 1), ((3, 7), True, 2), ((5, 2, 2, 2), False, 1)])
def test_mud_matches_the_equations_written_out(shape, nesterov, passes):
    rng = np.random.default_rng(0)
    theta, grads = rng.standard_normal(shape), [rng.standard_normal(shape) for _ in range(3)]
    param = torch.nn.Parameter(torch.tensor(theta))
    optimizer = Mud([param], lr=0.05, momentum=0.9, nesterov=nesterov, passes=passes, weight_decay=0.1)
    for grad in grads:
        param.grad = torch.tensor(grad)
        optimizer.step()
    expected = mud_reference(theta, grads, lr=0.05, beta=0.9, decay=0.1, nesterov=nesterov, passes=passes)
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(expected, theta)


def test_row_orthonormal_matrices_are_fixed_points_and_passes_converge_to_them():
    q = torch.linalg.qr(torch.randn(9, 4, dtype=torch.float64))[0].T  # 4 x 9, orthonormal rows
    torch.testing.assert_close(whiten_rows(q, eps=0.0), q)
    rng = torch.Generator().manual_seed(0)
    correlated = torch.randn(4, 9, generator=rng, dtype=torch.float64) + torch.randn(1, 9, generator=rng, dtype=torch.float64)

    def off(m: torch.Tensor) -> float:  # the largest |cosine| between two rows
        m = m / m.norm(dim=1, keepdim=True)
        return float((m @ m.T - torch.eye(len(m), dtype=m.dtype)).abs().max())

    errors = [off(correlated)] + [off(whiten_rows(correlated, passes)) for passes in (1, 2, 3)]
    assert errors[0] > 0.3 and errors[1] < errors[0] and errors[2] < 0.1 * errors[1] and errors[3] < 1e-6, errors


def test_mud_falls_back_to_adamw_for_vectors_tokens_and_marked_groups():
    rng = torch.Generator().manual_seed(0)
    bias, token, marked = (torch.randn(*s, generator=rng, dtype=torch.float64) for s in ((5,), (1, 1, 4), (3, 4)))
    ours = [torch.nn.Parameter(t.clone()) for t in (bias, token, marked)]
    theirs = [torch.nn.Parameter(t.clone()) for t in (bias, token, marked)]
    mud = Mud([{"params": ours[:2]}, {"params": ours[2:], "use_fallback": True}], lr=0.01, weight_decay=0.05,
              betas=(0.9, 0.95))
    adamw = torch.optim.AdamW(theirs, lr=0.01, weight_decay=0.05, betas=(0.9, 0.95), eps=1e-8)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=rng, dtype=torch.float64) for p in ours]
        for a, b, g in zip(ours, theirs, grads):
            a.grad, b.grad = g.clone(), g.clone()
        mud.step()
        adamw.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_factory_builds_fused_adamw_timm_muon_and_mud_with_the_trainers_betas():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    adamw = build_optimizer(model.parameters(), "adamw", 1e-3, (0.9, 0.95), "cpu")
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["fused"] is True
    muon = build_optimizer(model.parameters(), "muon", 2e-3, (0.8, 0.9), "cpu", {"ns_steps": 3})
    assert type(muon).__name__ == "Muon" and muon.defaults["ns_steps"] == 3 and muon.defaults["betas"] == (0.8, 0.9)
    mud = build_optimizer(model.parameters(), "MUD", 2e-3, (0.8, 0.9), "cpu")
    assert isinstance(mud, Mud) and mud.defaults["momentum"] == 0.9 and mud.defaults["lr"] == 2e-3
    assert {"adamw", "muon", "mud", "lamb", "lion"} <= set(optimizer_names())


def test_unknown_optimizer_or_argument_is_one_line_with_the_closest_names():
    with pytest.raises(UserInputError, match=r"^train.optimizer: unknown optimizer 'muonn' \(closest: muon"):
        load_config(PretrainConfig, None, ["train.optimizer=muonn"])
    model = torch.nn.Linear(4, 4)
    with pytest.raises(UserInputError, match=r"^train.optimizer_args \{'ns_step': 3\}: not accepted by muon"):
        build_optimizer(model.parameters(), "muon", 1e-3, (0.9, 0.95), "cpu", {"ns_step": 3})
    assert load_config(PretrainConfig, None, ["train.optimizer=Muon", "train.optimizer_args={ns_steps: 4}"]).train \
        .optimizer_args == {"ns_steps": 4}


@pytest.mark.parametrize("name, reads", [("adamw", 0), ("mud", 0)])
def test_an_optimizer_step_reads_nothing_to_the_host(name, reads):
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    optimizer = build_optimizer(model.parameters(), name, 1e-3, (0.9, 0.95), "cpu")
    for _ in range(2):
        model(torch.randn(4, 8)).square().mean().backward()
        with HostReads() as counted:
            optimizer.step()
        optimizer.zero_grad()
    assert counted.count == reads


def test_muon_runs_newton_schulz_in_float32_on_the_cpu_unless_asked_for_bfloat16():
    import timm.optim.muon as muon

    original = muon.zeropower_via_newtonschulz
    grads = [torch.randn(16, 24, generator=torch.Generator().manual_seed(i)) for i in range(2)]

    def trained(args: dict | None) -> torch.Tensor:
        param = torch.nn.Parameter(torch.ones(16, 24))
        optimizer = build_optimizer([param], "muon", 0.01, (0.9, 0.95), "cpu", args)
        for grad in grads:
            param.grad = grad.clone()
            optimizer.step()
        assert muon.zeropower_via_newtonschulz is original  # only patched during the step
        return param.detach()

    default, float32, bfloat16 = trained(None), trained({"ns_dtype": "float32"}), trained({"ns_dtype": "bfloat16"})
    assert torch.equal(default, float32) and not torch.equal(default, bfloat16)
    with pytest.raises(UserInputError, match=r"^train.optimizer_args.ns_dtype: expected one of float32, bfloat16"):
        build_optimizer([torch.nn.Parameter(torch.ones(4, 4))], "adamw", 0.01, (0.9, 0.95), "cpu", {"ns_dtype": "float32"})
