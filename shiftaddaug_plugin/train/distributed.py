"""DDP helpers of ``shiftaddaug-train``: rank-identity checks (state checksums, sort permutations), buffer broadcast,
process-group clean-up."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["state_checksum", "check_ranks_identical", "broadcast_buffers", "perm_digest", "cleanup"]


def state_checksum(model: nn.Module) -> torch.Tensor:
    """Two float64 numbers summarising every parameter and buffer (plain sum, position-weighted sum)."""
    flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in model.state_dict().values()
                      if t.is_floating_point()])
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64) / flat.numel()
    return torch.stack([flat.sum(), (flat * weights).sum()])


def check_ranks_identical(tensor: torch.Tensor, what: str) -> list[list[float]]:
    """All-gather ``tensor`` (CPU float64) and raise if the ranks disagree; returns the gathered values."""
    world = dist.get_world_size()
    gathered = [torch.zeros_like(tensor) for _ in range(world)]
    dist.all_gather(gathered, tensor)
    if any(not torch.equal(g, gathered[0]) for g in gathered[1:]):
        raise RuntimeError(f"DDP ranks diverged after {what}: {[g.tolist() for g in gathered]}; sorting/recalibration "
                           "must be deterministic from identical weights (check that every rank runs the same code "
                           "and torch version)")
    return [g.tolist() for g in gathered]


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BN running statistics) to every rank, as DDP does at the start of each forward."""
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def perm_digest(perms: dict[int, torch.Tensor]) -> torch.Tensor:
    total = torch.zeros(2, dtype=torch.float64)
    for gid, perm in sorted(perms.items()):
        p = perm.to(torch.float64)
        total += torch.stack([p.sum() * (gid + 1), (p * torch.arange(1, p.numel() + 1, dtype=torch.float64)).sum()])
    return total


def cleanup(distributed: bool) -> None:
    if distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
