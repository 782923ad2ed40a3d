"""Micro-batches in training order, rendered lazily in a DataLoader (workers + prefetch).

The order is a pure function of (seed, global step, rank), so a resumed run and a run split over
processes see exactly the same micro-batches. Only the current micro-batches' pixels are in
memory: RSS does not grow with the dataset.
"""
from __future__ import annotations

import functools

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from genrecal.data.render import collate
from genrecal.data.samples import Sample
from genrecal.distill.config import ConfigError, DistillConfig
from genrecal.distill.pairs import Pair, render_pair


def micro_batch(n: int, global_step: int, cfg: DistillConfig, rank: int, world: int, k: int) -> list[int]:
    """Sample indices of micro-batch k on `rank` at `global_step` (epochs reshuffle with seed+epoch)."""
    gbs = cfg.batch_size * cfg.grad_accum * world
    if n < gbs:
        raise ConfigError(f"only {n} usable samples for a global batch of {gbs}")
    per_epoch = n // gbs
    epoch, pos = divmod(global_step, per_epoch)
    chunk = _epoch_order(n, cfg.seed * 100003 + epoch)[pos * gbs:(pos + 1) * gbs]
    m = rank * cfg.grad_accum + k
    return chunk[m * cfg.batch_size:(m + 1) * cfg.batch_size].tolist()


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int) -> torch.Tensor:
    """One epoch's permutation of n samples [n], drawn once per epoch, not once per micro-batch (O(n) each)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


class RenderedPairs(Dataset):
    """Sample i rendered for the student (and the teacher) on access: a `Pair`."""

    def __init__(self, samples: list[Sample], student, teacher, max_length: int):
        self.samples, self.student, self.teacher, self.max_length = samples, student, teacher, max_length

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Pair:
        return render_pair(self.samples[i], self.student, self.teacher, self.max_length)


class StepOrder(Sampler):
    """This rank's micro-batches (index lists) for `steps` optimizer steps from `start` (global step)."""

    def __init__(self, n: int, cfg: DistillConfig, rank: int, world: int, start: int, steps: int):
        self.n, self.cfg, self.rank, self.world, self.start, self.steps = n, cfg, rank, world, start, steps

    def __len__(self) -> int:
        return self.steps * self.cfg.grad_accum

    def __iter__(self):
        for step in range(self.start, self.start + self.steps):
            for k in range(self.cfg.grad_accum):
                yield micro_batch(self.n, step, self.cfg, self.rank, self.world, k)


def _collate(pairs: list[Pair], student_pad: int, teacher_pad: int | None):
    s = collate([p.student for p in pairs], student_pad)
    t = None if teacher_pad is None else collate([p.teacher for p in pairs], teacher_pad)
    return s, t


def batch_loader(data: RenderedPairs, order: StepOrder, pads: tuple[int, int | None], workers: int) -> DataLoader:
    """(student batch, teacher batch or None) per micro-batch, rendered by `workers` processes
    (0: in this process) with two batches prefetched per worker."""
    collate_fn = functools.partial(_collate, student_pad=pads[0], teacher_pad=pads[1])
    # its own generator: building the loader must not draw from the global RNG a checkpoint restores
    return DataLoader(data, batch_sampler=order, collate_fn=collate_fn, num_workers=workers,
                      prefetch_factor=2 if workers else None, generator=torch.Generator().manual_seed(0))
