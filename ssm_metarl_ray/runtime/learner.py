"""Learner actor (``--learner-gpus > 0``): :class:`MetaLearner` in its own process, optionally on a GPU.

:class:`RemoteLearner` gives the driver the ``MetaLearner`` surface ``meta_train`` and the checkpoint code
use (``update``, ``get_weights``, ``version``, ``state_dict``, ``load_state_dict``), so the training loop is
the same whichever process learns. On a GPU the policy and every tensor the update creates live on the
device (``torch.set_default_device``); weights and state leave the actor as CPU arrays/tensors.
"""

from __future__ import annotations

import os

import numpy as np
import ray
import torch

from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.runtime.cluster import _first_line, actor_name, get
from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.runtime.errors import ActorDiedError, RuntimeSetupError
from ssm_metarl_ray.training.meta_train import make_learner
from ssm_metarl_ray.training.protocols import Learner
from ssm_metarl_ray.types import EnvSpec, TaskBatch


def to_cpu(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_cpu(v) for v in x)
    return x


def learner_device(gpu_ids: list, cuda_available: bool, torch_version: str = torch.__version__) -> str:
    """``"cuda"`` when Ray gave this process GPUs, ``"cpu"`` when it gave none; a GPU without CUDA in
    torch is an error, never a silent fall-back to the CPU."""
    if not gpu_ids:
        return "cpu"
    if not cuda_available:
        raise RuntimeError(f"--learner-gpus: Ray assigned GPU(s) {list(gpu_ids)} to the learner but torch "
                           f"{torch_version} cannot use CUDA (a CPU-only build, or no driver): install a "
                           "CUDA build of torch on the GPU nodes, or drop --learner-gpus")
    return "cuda"


@ray.remote
class LearnerActor:
    def __init__(self, cfg: ExperimentConfig, spec: EnvSpec, state: dict):
        self.device = learner_device(ray.get_gpu_ids(), torch.cuda.is_available())
        if self.device == "cuda":
            torch.set_default_device(self.device)  # batches become device tensors inside MetaLearner.update
        self.learner = make_learner(spec.make_policy(cfg.model).to(self.device), cfg, spec.task_dim)
        self.learner.load_state_dict(state)

    def info(self) -> dict:
        return {"pid": os.getpid(), "device": self.device, "version": self.learner.version,
                "node_id": ray.get_runtime_context().get_node_id()}

    def update(self, batches: list[TaskBatch]) -> tuple[dict[str, float], int]:
        return self.learner.update(batches), self.learner.version

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.learner.get_weights()

    def state_dict(self) -> dict:
        return to_cpu(self.learner.state_dict())

    def load_state_dict(self, state: dict) -> int:
        self.learner.load_state_dict(state)
        return self.learner.version


class RemoteLearner:
    """Driver-side stand-in for :class:`MetaLearner`, backed by a :class:`LearnerActor`."""

    def __init__(self, cfg: ExperimentConfig, spec: EnvSpec, local: Learner, run_id: str, rt: RuntimeConfig):
        """An actor with ``rt.learner_gpus`` GPUs and ``rt.learner_cpus`` CPUs; updates may take
        ``rt.long_call_timeout_s``, other calls ``rt.call_timeout_s``."""
        self.timeout, self.update_timeout = rt.call_timeout_s, rt.long_call_timeout_s
        num_gpus = rt.learner_gpus
        have = ray.cluster_resources().get("GPU", 0.0)
        if num_gpus > have:
            raise RuntimeSetupError(f"--learner-gpus {num_gpus:g}: the Ray cluster has {have:g} GPU(s) (see "
                                    "`ray status`); on an autoscaling cluster start a GPU node first, or drop "
                                    "--learner-gpus")
        self.handle = LearnerActor.options(  # type: ignore[attr-defined]  # an ActorClass at runtime
            name=actor_name(run_id, "learner"), namespace=rt.namespace, num_gpus=num_gpus, num_cpus=rt.learner_cpus
        ).remote(cfg, spec, local.state_dict())
        try:
            self.info = get(self.handle.info.remote(), rt.startup_timeout_s, "starting the learner actor")
        except ray.exceptions.RayActorError as e:  # its constructor failed (e.g. GPU without CUDA)
            ray.kill(self.handle, no_restart=True)
            cause = getattr(e, "cause", None) or e
            raise RuntimeSetupError(f"the learner actor did not start: {_first_line(cause)}") from None
        self.version = self.info["version"]

    def _get(self, ref, timeout: float, what: str):
        """``get`` that turns the actor's death into one :class:`ActorDiedError` line: the learner holds the
        only copy of the weights and optimizer state since the last checkpoint, so it is not restarted."""
        try:
            return get(ref, timeout, what)
        except ray.exceptions.RayActorError as e:
            cause = getattr(e, "cause", None) or e
            raise ActorDiedError(f"the learner actor died during {what} ({_first_line(cause)}); its state since "
                                 "the last checkpoint is lost: continue with --resume (use --checkpoint-every "
                                 "to checkpoint more often)") from None

    def update(self, batches: list[TaskBatch]) -> dict[str, float]:
        metrics, self.version = self._get(self.handle.update.remote(batches), self.update_timeout, "learner update")
        return metrics

    def get_weights(self) -> dict[str, np.ndarray]:
        return self._get(self.handle.get_weights.remote(), self.timeout, "learner get_weights")

    def state_dict(self) -> dict:
        return self._get(self.handle.state_dict.remote(), self.timeout, "learner state_dict")

    def load_state_dict(self, state: dict) -> None:
        self.version = self._get(self.handle.load_state_dict.remote(state), self.timeout,
                                 "learner load_state_dict")

    def close(self) -> None:
        ray.kill(self.handle, no_restart=True)
