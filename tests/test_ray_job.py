"""End to end through Ray Jobs with token auth: `ray start --head` on free ports, `ray job submit` of a short
training run (cluster/submit.sh), its actors visible in `ray list actors`, job SUCCEEDED, outputs written,
and only our own head stopped afterwards (never a global `ray stop`)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ray_job_submit_with_token_auth(tmp_path):
    gcs, dash, client, agent = _free_ports(4)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),  # head, CLI and job share it
        "RAY_PORT": str(gcs), "DASHBOARD_PORT": str(dash), "CLIENT_PORT": str(client),
        "AGENT_PORT": str(agent),
        "NUM_CPUS": "2", "TIMEOUT_S": "200", "OMP_NUM_THREADS": "1",
        "JOB_ID": f"ssm-test-{secrets.token_hex(3)}", "OUTPUT_DIR": str(out),
        "LOG_DIR": str(tmp_path / "logs"),
    })
    train = ["python", "-m", "ssm_metarl_ray", "train", "--env", "navigation-2d", "--num-workers", "2",
             "--iterations", "2", "--meta-batch-size", "2", "--episodes-per-task", "3",
             "--num-test-tasks", "2",
             "--adapt-steps", "1", "--hidden-size", "16", "--num-layers", "1", "--output-dir", str(out)]
    proc = subprocess.Popen(["bash", "cluster/submit.sh", "--", *train], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    actors = ""
    try:
        while proc.poll() is None and "RolloutWorkerActor" not in actors:  # while the job runs
            r = subprocess.run(["ray", "list", "actors", "--address", f"http://127.0.0.1:{dash}"], env=env,
                               capture_output=True, text=True, timeout=60)
            actors = r.stdout if r.returncode == 0 else ""
            time.sleep(2)
        log, _ = proc.communicate(timeout=280)
    finally:
        if proc.poll() is None:
            proc.terminate()  # submit.sh's trap stops its own head
            proc.wait(timeout=60)
    assert proc.returncode == 0, log[-4000:]
    assert "finished: SUCCEEDED" in log
    for role, cls in (("rollout-0", "RolloutWorkerActor"), ("rollout-1", "RolloutWorkerActor"),
                      ("buffer", "ExperienceBufferActor")):
        assert role in actors and cls in actors, actors
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and set(metrics["evaluation"]) == {"standard", "hybrid"}
    assert (out / "checkpoint" / "buffer.npz").is_file()
    deadline = time.monotonic() + 30
    while (_listening(gcs) or _listening(dash)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _listening(gcs) and not _listening(dash)  # our head is gone
