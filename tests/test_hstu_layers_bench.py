"""``benchmarks/hstu_layers.py``: its reference (the previous HSTU layer: boolean mask, a new
block per operation) computes what :class:`HSTUNet` computes, bit for bit, outputs and
gradients, so the benchmark's ratio compares two ways of doing the same work and the change
leaves every HSTU training as it was."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from genrec.models._sequential import log_proposal
from genrec.models.hstu import HSTUNet

_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("hstu_layers_bench",
                                               _ROOT / "benchmarks" / "hstu_layers.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_reference_matches_the_net_and_its_gradients() -> None:
    torch.manual_seed(0)
    n_items, max_len = 40, 12
    net = HSTUNet(n_items, max_len, 16, 3, 2, 0.2, 8, None, "ce", 8,
                  log_proposal(None, n_items)).eval()  # dropout off: both see the same net
    seq = torch.randint(1, n_items + 1, (5, max_len))
    seq[0, :7] = 0                         # left padding, as training batches have
    seq[1, :11] = 0
    targets = torch.roll(seq, -1, dims=1)
    targets[seq == 0] = 0
    h, loss = net(seq, targets)
    h_ref, loss_ref = bench.reference_forward(net, seq, targets)
    assert torch.equal(h, h_ref) and torch.equal(loss, loss_ref)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    grads_ref = torch.autograd.grad(loss_ref, list(net.parameters()))
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert torch.equal(g, g_ref)
    # Training mode draws the same dropout masks in the same order: one step, same loss.
    net.train()
    torch.manual_seed(1)
    _, loss = net(seq, targets)
    torch.manual_seed(1)
    _, loss_ref = bench.reference_forward(net, seq, targets)
    assert torch.equal(loss, loss_ref)
