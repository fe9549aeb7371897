"""Soak: a 2-worker run of >= 200 meta-iterations (tiny sizes) whose buffer actor and rollout workers are
SIGKILLed several times at random (seeded) points. Does the run finish, is every env step in the buffer
exactly once, what did the restarts report, and does any process grow?

    python benchmarks/soak.py           # -> benchmarks/results/soak.json (about 5 minutes on 2 cores)
    python benchmarks/soak.py --smoke   # 12 iterations, 2 kills, seconds; writes nothing

Sizes: navigation-2d, 2 tasks x 2 episodes per meta-iteration (one task per worker), 16-unit SSM,
800 env steps per iteration. Kills: ``--kills`` events at distinct random iterations, alternately the
buffer actor and a random rollout worker, each ``delay`` seconds (random, within the next iteration's
sampling) after an iteration ended. The buffer actor may restart ``--kills`` times; a worker Ray can no
longer restart is replaced by the sampler. Peak RSS: every process of the run (the driver and all its
descendants: Ray's GCS, raylet, the actors), polled every 0.5 s with psutil.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, start_ray, write  # noqa: E402


def soak_cfg(iterations: int):
    from ssm_metarl_ray.config import AdaptConfig, ExperimentConfig, MetaConfig, ModelConfig

    return ExperimentConfig(env="navigation-2d", iterations=iterations, num_train_tasks=20, num_test_tasks=2,
                            seed=0, model=ModelConfig(hidden_size=16, num_layers=1, state_size=8),
                            meta=replace(MetaConfig(), meta_batch_size=2, episodes_per_task=2),
                            adapt=replace(AdaptConfig(), buffer_size=iterations * 800 + 800))


class RssMonitor(threading.Thread):
    """Peak / first / last RSS of this process and all its descendants, polled every ``every_s``."""

    def __init__(self, every_s: float = 0.5):
        super().__init__(daemon=True)
        import psutil
        import ray  # noqa: F401  (importing Ray puts its bundled psutil on sys.path)

        self.psutil, self.every_s, self.procs = psutil, every_s, {}
        self._done = threading.Event()

    def run(self) -> None:
        me = self.psutil.Process(os.getpid())
        while not self._done.is_set():
            for p in [me, *me.children(recursive=True)]:
                self._sample(p)
            self._done.wait(self.every_s)

    def _sample(self, p) -> None:
        try:
            rss, label = p.memory_info().rss / 2**20, _label(p.cmdline(), p.name())
        except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
            return
        r = self.procs.setdefault(p.pid, {"pid": p.pid, "label": label, "first_rss_mb": rss,
                                          "peak_rss_mb": rss})
        if label.startswith("ray::") and label != "ray::IDLE":  # the actor a Ray worker process holds
            r["label"] = label.split(".")[0]
        r["peak_rss_mb"], r["last_rss_mb"] = max(r["peak_rss_mb"], rss), rss

    def stop(self) -> list[dict]:
        self._done.set()
        self.join()
        for r in self.procs.values():
            r["alive_at_end"] = self.psutil.pid_exists(r["pid"])
        return sorted(({k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}
                       for r in self.procs.values()), key=lambda r: -r["peak_rss_mb"])


def _label(cmdline: list[str], name: str) -> str:
    """``ray::<Actor>`` for Ray workers, the script (``log_monitor.py``) or the executable otherwise."""
    if cmdline and cmdline[0].startswith("ray::"):
        return cmdline[0]
    script = next((os.path.basename(a) for a in cmdline if a.endswith(".py")), None)
    return script or (os.path.basename(cmdline[0]) if cmdline else name)


class Killer:
    """``on_iteration`` callback: after the planned iterations, SIGKILL the buffer actor or a worker."""

    def __init__(self, session, plan: dict[int, tuple[str, float]], rng: random.Random):
        self.session, self.plan, self.rng, self.events, self._threads = session, plan, rng, [], []

    def __call__(self, state, metrics) -> None:
        if state.iteration not in self.plan:
            return
        target, delay = self.plan[state.iteration]
        if target == "buffer":
            name, pid = self.session.buffer.name, self.session.buffer.stats()["pid"]
        else:
            w = self.rng.choice(self.session.sampler.info())
            name, pid = w["name"], w["pid"]
        event = {"after_iteration": state.iteration, "target": name, "pid": pid, "delay_s": round(delay, 3)}
        t = threading.Thread(target=self._kill, args=(event, delay), daemon=True)
        self.events.append(event)
        self._threads.append(t)
        t.start()

    def _kill(self, event: dict, delay: float) -> None:
        time.sleep(delay)
        try:
            os.kill(event["pid"], signal.SIGKILL)
            event["killed"] = True
        except ProcessLookupError:
            event["killed"] = False

    def join(self) -> None:
        for t in self._threads:
            t.join()


def kill_plan(iterations: int, kills: int, seed: int) -> dict[int, tuple[str, float]]:
    """``kills`` distinct random iterations (not the last), alternately buffer and worker, random delays."""
    rng = random.Random(seed)
    its = sorted(rng.sample(range(1, iterations - 1), kills))
    return {it: ("buffer" if i % 2 == 0 else "worker", rng.uniform(0.0, 0.6)) for i, it in enumerate(its)}


class Lines(logging.Handler):
    """Collects the runtime's warning lines (buffer restarts, worker replacements)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def buffer_check(session, state) -> dict:
    """Rows stored vs env steps, and that no (episode, step) is stored twice."""
    from ssm_metarl_ray.runtime.cluster import get

    st = session.buffer.stats()
    rows = get(session.buffer.handle.state_dict.remote(), 120, "buffer state")
    pairs = rows["episode_id"] * 1_000 + rows["step"]
    keys = ("restart", "from", "base_rows", "log_rows", "log_records", "log_skipped", "torn_bytes", "seconds")
    return {"env_steps": state.env_steps, "rows_added": st["num_added"], "rows_stored": st["size"],
            "distinct_episode_steps": len(np.unique(pairs)), "duplicates_skipped": st["duplicates_skipped"],
            "snapshots": st["snapshots"], "buffer_restarts": len(st["restarts"]), "log": st["log"],
            "restarts": [{k: r.get(k) for k in keys} for r in st["restarts"]]}


def soak(iterations: int, kills: int, seed: int) -> dict:
    from ssm_metarl_ray.runtime.config import RuntimeConfig
    from ssm_metarl_ray.runtime.session import RaySession
    from ssm_metarl_ray.training.meta_train import build_state, meta_train

    cfg, lines, monitor = soak_cfg(iterations), Lines(), RssMonitor()
    logging.getLogger("ssm_metarl_ray.runtime").addHandler(lines)
    rt = RuntimeConfig(num_workers=2, run_id=f"soak{seed}", buffer_max_restarts=kills, sample_timeout_s=120.0)
    state, t0, out = build_state(cfg), time.perf_counter(), Path(tempfile.mkdtemp(prefix="soak_"))
    monitor.start()
    with RaySession(cfg, rt, state.spec, out) as session:  # snapshot + log in out/.buffer_snapshots
        killer = Killer(session, kill_plan(iterations, kills, seed), random.Random(seed + 1))
        meta_train(state, session.sampler, killer, add_experience=session.add_experience)
        killer.join()
        wall = time.perf_counter() - t0
        check, sampler = buffer_check(session, state), session.sampler.stats()
    processes = monitor.stop()
    out.rmdir()  # the session removed its snapshot, log and their directory
    return {"iterations_planned": iterations, "iterations_completed": state.iteration,
            "wall_s": round(wall, 1),
            "kills": killer.events, "buffer": check, "buffer_report": session.buffer_report(),
            "sampler": sampler, "warning_lines": lines.lines, "processes": processes,
            "ok": {"all_iterations": state.iteration == iterations,
                   "rows_added_eq_env_steps": check["rows_added"] == state.env_steps,
                   "no_duplicates": check["distinct_episode_steps"] == check["rows_stored"],
                   "nothing_lost_reported": session.buffer_report().get("rows_lost") == 0}}


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--kills", type=int, default=12, help="kill events (half buffer, half worker)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    iterations, kills = (12, 2) if args.smoke else (args.iterations, args.kills)
    import torch

    torch.set_num_threads(1)
    owns = start_ray(args)
    try:
        out = soak(iterations, kills, args.seed)
    finally:
        if owns:
            import ray

            ray.shutdown()
    flags = "" if args.smoke else f" --iterations {iterations} --kills {kills} --seed {args.seed}"
    write("soak", args, "python benchmarks/soak.py" + flags, out)
    return out


if __name__ == "__main__":
    main()
