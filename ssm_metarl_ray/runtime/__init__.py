"""Ray runtime: the only package of the library that imports ``ray``.

It wraps the core's plain classes as actors without changing them:

======================  =============================================================  =================
module                  what                                                           actor name suffix
======================  =============================================================  =================
``cluster``             ``init_ray`` (attach or start), run ids, ``get`` with timeout  -
``workers``             ``RolloutWorkerActor`` + ``RaySampler`` (LocalSampler twin)    ``rollout-<i>``
``buffer``              ``ExperienceBufferActor`` (snapshot + log), ``BufferClient``   ``buffer``
``evaluation``          ``EvaluatorActor`` + ``evaluate_parallel``                     ``evaluator-<i>``
``learner``             ``LearnerActor`` + ``RemoteLearner`` (``--learner-gpus``)      ``learner``
``gradients``           ``WorkerGradientPool``: meta-gradient shares on the workers    -
``session``             ``RaySession``: all of the above for one training run          -
``backend``             ``RayBackend`` (``run_experiment`` on Ray), ``evaluate_here``    -
``tune``                ``fit_sweep`` (Tuner, restore), the trial ``sweep_trial``      -
``config``, ``errors``  ``RuntimeConfig``, the runtime's exceptions (no Ray import)    -
======================  =============================================================  =================

Actors are named ``ssm-metarl:<run id>:<role>`` in the ``ssm_metarl`` namespace (see ``ray list actors``).
Importing this package does not import Ray; its submodules (other than ``config``) do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ssm_metarl_ray.runtime.config import RuntimeConfig

if TYPE_CHECKING:
    from ssm_metarl_ray.training.protocols import Backend, Sampler


def make_backend(rt: RuntimeConfig | None, out: Path | None = None, sampler: Sampler | None = None) -> Backend:
    """The backend of a run: ``RayBackend`` when ``rt`` asks for Ray workers and no ``sampler`` is given,
    else the in-process ``LocalBackend`` (sampling with ``sampler`` when given). Imports Ray only for
    the former."""
    if sampler is None and rt is not None and rt.use_ray:
        from ssm_metarl_ray.runtime.backend import RayBackend

        return RayBackend(rt, out)
    from ssm_metarl_ray.training.experiment import LocalBackend

    return LocalBackend(sampler)


def init_ray(*args, **kwargs) -> bool:
    """See :func:`ssm_metarl_ray.runtime.cluster.init_ray` (imported lazily: importing Ray takes a second)."""
    from ssm_metarl_ray.runtime.cluster import init_ray as _init

    return _init(*args, **kwargs)


__all__ = ["RuntimeConfig", "init_ray", "make_backend"]
