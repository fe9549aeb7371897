"""The one episode-id scheme of the experience buffer.

Every episode stored in a buffer gets an integer id; the buffer uses them to cut whole episodes out of
its rows. :class:`EpisodeIds` hands out contiguous ids, K for an ``EpisodeBatch`` of K episodes:

* training data: meta-batch slot ``s`` at weights version ``v`` starts at ``(v * meta_batch_size + s) *
  E``, E = ``(inner_steps + 1) * episodes_per_task`` (:meth:`EpisodeIds.for_slot`), which is also what one
  counter gives when the driver adds every iteration's batches in order (pre batches, then post): the ids
  are the same whichever process writes a chunk to the buffer. With ``meta.batch_unit`` "steps" a batch
  may hold up to ``horizon`` times more episodes (each at least one step), so E is that bound and the
  slots' ids stay disjoint (the driver's counter advances by E per slot too);
* adaptation data (episodes an adapter adds while evaluating): from :data:`ADAPTATION_FIRST_ID` = 2**40,
  far above any training id (:meth:`EpisodeIds.for_adaptation`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ssm_metarl_ray.config import MetaConfig
from ssm_metarl_ray.replay.convert import episodes_to_block
from ssm_metarl_ray.types import EpisodeBatch, TaskBatch

ADAPTATION_FIRST_ID = 1 << 40


def episodes_per_slot(meta: MetaConfig, horizon: int) -> int:
    """Most episodes one meta-batch slot can store per iteration (its ids' allotment)."""
    per_batch = meta.episodes_per_task * (horizon if meta.batch_unit == "steps" else 1)
    return (meta.inner_steps + 1) * per_batch


def first_episode_id(meta: MetaConfig, version: int, slot: int, horizon: int) -> int:
    """Id of the first episode of meta-batch ``slot`` at weights ``version``."""
    return (version * meta.meta_batch_size + slot) * episodes_per_slot(meta, horizon)


def episodes_of(batches: Iterable[TaskBatch]) -> list[EpisodeBatch]:
    """The episode batches of task batches in buffer order: each task's pre batches, then its post."""
    return [ep for b in batches for ep in [*b.pre, b.post]]


class EpisodeIds:
    """Allocates contiguous episode ids from ``next_id`` on."""

    def __init__(self, next_id: int):
        self.next_id = next_id

    @classmethod
    def for_slot(cls, meta: MetaConfig, version: int, slot: int, horizon: int) -> EpisodeIds:
        return cls(first_episode_id(meta, version, slot, horizon))

    @classmethod
    def for_adaptation(cls) -> EpisodeIds:
        return cls(ADAPTATION_FIRST_ID)

    def block(self, batch: EpisodeBatch) -> dict[str, np.ndarray]:
        """``batch`` as one buffer block, its K episodes numbered with the next K ids."""
        block = episodes_to_block(batch, self.next_id)
        self.next_id += batch.rewards.shape[0]
        return block

    def blocks(self, batches: Iterable[EpisodeBatch]) -> list[dict[str, np.ndarray]]:
        return [self.block(b) for b in batches]
