"""A simulated training epoch for tests of the mining stage without a trainer.

Importable from any test module (pytest puts ``tests/`` on the path for its conftest).
"""

from __future__ import annotations


def simulate_epoch(mining, epoch: int, *, spread: float = 0.0, batch_size: int = 6):
    """Feed one simulated epoch to a mining stage and close it; returns its hsm/ metrics.

    The sampler's own order, in batches; target samples 0..7 are hard (3x
    loss), losses shrink 10% an epoch, and ``spread`` tells samples apart
    (loss x (1 + spread * base_idx)).
    """
    from hardmine.core import sample_ids

    pools = mining.sampler.pools
    mining.sampler.set_epoch(epoch)
    refs = list(mining.sampler)
    for step, start in enumerate(range(0, len(refs), batch_size)):
        batch = refs[start : start + batch_size]
        names = [pools[r.pool].name for r in batch]
        ids = [int(sample_ids(n, [r.base_idx])[0]) for n, r in zip(names, batch)]
        hard = [n == pools[0].name and r.base_idx < 8 for n, r in zip(names, batch)]
        loss = [(3.0 if h else 1.0) * 0.9**epoch * (1 + spread * r.base_idx) for h, r in zip(hard, batch)]
        mining.record(ids, loss, [r.position for r in batch], step=epoch * 100 + step)
    return mining.end_epoch(epoch)

