"""Connecting to Ray, naming a run's actors, and the errors the runtime raises."""

from __future__ import annotations

import os
import secrets
import time

import ray

from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.runtime.errors import ActorCallTimeout, RuntimeSetupError

dashboard_url: str | None = None  # of the cluster init_ray started or attached to, when it has one


def connect(rt: RuntimeConfig) -> bool:
    """:func:`init_ray` with the cluster settings of ``rt`` (address, CPUs, dashboard, object store,
    namespace)."""
    return init_ray(rt.address, rt.num_cpus, include_dashboard=rt.include_dashboard,
                    object_store_memory=rt.object_store_memory, namespace=rt.namespace)


def init_ray(address: str | None = None, num_cpus: int | None = None, *, include_dashboard: bool = False,
             object_store_memory: int | None = RuntimeConfig.object_store_memory,
             namespace: str | None = None) -> bool:
    """Attach to a cluster when ``address`` or ``RAY_ADDRESS`` is given, else start a local one.

    Returns True when this call initialised Ray (the caller then owns the shutdown), False when Ray was
    already initialised. Attaching passes no resources (Ray rejects ``num_cpus`` for an existing cluster),
    so a ``ray job submit`` entrypoint simply attaches. Token authentication (Ray 2.59+): a local cluster
    started here shares this process's credentials; to attach, ``RAY_AUTH_MODE`` (and the token, from
    ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) must match the cluster's.
    """
    global dashboard_url
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ctx = ray.init(address=address, namespace=namespace)
        else:
            # "local": always a new cluster (bare ray.init() would attach to a `ray start` head on this host)
            ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
                           object_store_memory=object_store_memory, namespace=namespace)
        dashboard_url = getattr(ctx, "dashboard_url", None) or None
    except ray.exceptions.AuthenticationError as e:
        raise RuntimeSetupError(
            f"Ray authentication failed for {address or 'the local cluster'}: set RAY_AUTH_MODE "
            f"(token|disabled) and the token to match the cluster ({_first_line(e)})") from None
    except (ConnectionError, ValueError) as e:
        raise RuntimeSetupError(f"cannot connect to Ray at {address!r}: {_first_line(e)}") from None
    return True


def make_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}"


def actor_name(run_id: str, role: str) -> str:
    """Names shown by ``ray list actors``: ``ssm-metarl:<run id>:<role>``."""
    return f"ssm-metarl:{run_id}:{role}"


def default_num_workers(learner_cpus: float, cpus_per_worker: float = 1.0) -> int:
    """CPUs Ray sees minus what the learner needs, in workers of ``cpus_per_worker``; at least 1."""
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    return max(1, int((cpus - learner_cpus) // cpus_per_worker))


def get(ref, timeout: float, what: str):
    """``ray.get`` with a timeout that raises :class:`ActorCallTimeout` naming the call."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise ActorCallTimeout(f"{what} did not return within {timeout:g} s") from None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
