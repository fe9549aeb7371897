"""Simulated multi-node cluster (ray.cluster_utils.Cluster): workers spread over two nodes; losing one
node mid-run does not end it. Own module: a Cluster cannot share a process with another ray.init."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402
from ray_util import learning_history, rt, tiny_cfg  # noqa: E402

from ssm_metarl_ray.runtime.buffer import create_buffer  # noqa: E402
from ssm_metarl_ray.runtime.workers import RaySampler  # noqa: E402
from ssm_metarl_ray.training.meta_train import LocalSampler, build_state, count_experience, meta_train  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 100 * 1024**2})
    nodes = [c.add_node(num_cpus=2, object_store_memory=100 * 1024**2) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="ssm-test", log_to_driver=False)
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def test_workers_spread_and_node_loss_does_not_end_the_run(cluster, tmp_path):
    c, nodes = cluster
    cfg = tiny_cfg(iterations=3, meta_batch_size=4)
    spec = build_state(cfg).spec
    buffer = create_buffer(cfg.adapt.buffer_size, spec.obs_dim, spec.act_dim, False, "multinode",
                           snapshot_dir=tmp_path)
    sampler = RaySampler(cfg, rt(), 2, "multinode", buffer.name)
    try:
        # simulated nodes share one host, so the driver may sit on any of them; the buffer goes next to it
        driver_node = ray.get_runtime_context().get_node_id()
        assert buffer.stats()["node_id"] == driver_node
        placed = {w["node_id"] for w in sampler.info()}
        assert placed == {n.node_id for n in nodes}  # SPREAD: one worker per worker node, none on the head
        victim = next(n for n in nodes if n.node_id != driver_node)  # hosts a worker, not the driver
        survivor = next(n for n in nodes if n is not victim)

        def lose_a_node(st, m):
            if st.iteration == 1:
                c.remove_node(victim)  # worker 1 dies with it; Ray restarts it on the survivor

        state = build_state(cfg)
        meta_train(state, sampler, lose_a_node, add_experience=count_experience)
        assert state.iteration == 3
        local = build_state(cfg)
        meta_train(local, LocalSampler(cfg, cfg.seed, tasks_per_chunk=2))
        assert learning_history(state.history) == learning_history(local.history)
        assert {w["node_id"] for w in sampler.info()} == {survivor.node_id}
        # workers on other nodes wrote their blocks to the buffer actor on the head, each exactly once
        stats = buffer.stats()
        assert stats["size"] == state.env_steps, stats
    finally:
        sampler.stop()
        buffer.close()
