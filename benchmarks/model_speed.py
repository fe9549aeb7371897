"""Speed of the sequence models: training cost, rollout step latency, memory (CPU, float32).

1. **Training cost** - ``Policy.forward_sequence`` + a loss on every output + ``backward`` over all
   parameters, on a (B, T) batch of trajectories with episode resets at random positions (every row
   starts an episode at t=0, then each step starts a new one with probability ``--p-reset``), for
   T in ``--T`` and each torch thread count in ``--threads``. Wall time (``perf_counter``) and process
   CPU time (``process_time``; with one thread it leaves out the time other jobs hold the core) are both
   kept. Models are timed in rotating order inside every repetition (interleaved), so machine load hits
   them alike; each row of the results holds all repetitions, and ratios are taken to the SSM min/min
   and within the same repetition (paired).
   ``lstm_fused_noreset`` is a reference only: ``nn.LSTM`` over the whole batch, which cannot reset its
   state inside a row (wrong for these batches); it shows what the step loop of a correct LSTM costs.
2. **Rollout step latency** - ``Policy.step`` under ``torch.no_grad()`` (the rollout hot path), batch
   ``--step-batches``, one thread, steady state (``done_t=None``: no row done, what the rollout workers pass
   after an episode's first step), interleaved rounds.
3. **Memory at the largest T** - one fresh subprocess per model (one thread): peak RSS growth of one
   forward + backward (``VmHWM`` after it minus ``VmRSS`` before it, the peak reset just before with
   ``echo 5 > /proc/self/clear_refs``, model and data already built; ``ru_maxrss`` is not usable alone:
   Linux carries the parent's peak across fork/exec), and the bytes autograd saves for backward (unique
   storages seen by ``torch.autograd.graph.saved_tensors_hooks``). ``tracemalloc`` does not see torch's
   allocations, hence RSS.

Writes ``benchmarks/results/model_speed.json`` (every raw number, machine, torch, threads, date) and
renders ``benchmarks/MODEL_SPEED.md`` from that JSON only. ``--smoke`` runs tiny sizes in seconds and
writes both into a temporary directory (or ``--out``).

    python benchmarks/model_speed.py            # full run, ~5 minutes on 2 cores
    python benchmarks/model_speed.py --smoke
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ssm_metarl_ray.config import MODELS, ModelConfig  # noqa: E402
from ssm_metarl_ray.models.packed_step import SMALL_BATCH_MAX  # noqa: E402
from ssm_metarl_ray.models.policy import Policy, PolicyOutput  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "model_speed.json"
REPORT = ROOT / "benchmarks" / "MODEL_SPEED.md"
OBS_DIM, ACT_DIM = 10, 2  # continuous actions: policy input = obs + action + reward + done = 14
REFERENCE = "lstm_fused_noreset"

THREADS_NOTE = ("Training is timed with 1 torch thread by default. On the shared 2-core machine these results "
                "come from, a trial with 2 threads (other jobs keeping the load average near 4-5) made every model "
                "several to tens of times slower than with 1 thread and varied wildly between repetitions "
                "(OpenMP threads waiting for descheduled siblings), so it measured the machine, not the models; "
                "run `--threads 1 2` on an idle machine to get 2-thread numbers.")

RESET_HANDLING = {
    "ssm": "Reset folded into the scan: decay a_t = lambda * (1 - done_t), so h_t = B u_t at an episode's "
           "first step; one chunked two-level scan per layer (~2*sqrt(T) vectorised steps) with a custom, "
           "twice-differentiable backward (a reverse scan). No per-step Python loop.",
    "lstm": "Python loop over T per layer (input projection of all steps is one GEMM before it); the state "
            "(h, c) is multiplied by (1 - done_t) at steps where some row resets. A fused nn.LSTM cannot "
            "reset inside a sequence.",
    "gru": "Same step loop as the LSTM (state h masked by (1 - done_t) at steps with a reset).",
    "transformer": "No recurrence: attention is masked to keys of the same episode (episode id = cumsum of "
                   "dones) within the last context_len steps; positions restart at each reset; queries are "
                   "processed in blocks of context_len against context_len - 1 + block keys (O(T L)).",
    "mlp": "Stateless: resets need nothing (memoryless baseline).",
    REFERENCE: "Reference only, NOT correct here: torch.nn.LSTM over the whole (B, T) batch ignores resets "
               "(state leaks across episodes); the cost a fused kernel would have.",
}


class FusedLSTMPolicy(nn.Module):
    """``nn.LSTM`` core (ignores dones) with the Policy's heads; reference for the training benchmark."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.lstm = nn.LSTM(OBS_DIM + ACT_DIM + 2, cfg.hidden_size, cfg.num_layers, batch_first=True)
        self.actor = nn.Linear(cfg.hidden_size, ACT_DIM)
        self.critic = nn.Linear(cfg.hidden_size, 1)
        self.log_std = nn.Parameter(torch.zeros(ACT_DIM))

    def forward_sequence(self, x, state, dones):
        y, _ = self.lstm(x)
        out = self.actor(y)
        return PolicyOutput(torch.cat([out, self.log_std.expand_as(out)], -1), self.critic(y).squeeze(-1)), None


def model_config(kind: str, args) -> ModelConfig:
    return ModelConfig(kind=kind if kind in MODELS else "lstm", hidden_size=args.hidden, num_layers=args.layers,
                       state_size=args.state_size, num_heads=args.heads, context_len=args.context)


def build(kind: str, args, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = model_config(kind, args)
    return FusedLSTMPolicy(cfg) if kind == REFERENCE else Policy(OBS_DIM, ACT_DIM, False, cfg)


def make_batch(B: int, T: int, p_reset: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, OBS_DIM + ACT_DIM + 2, generator=g)
    dones = (torch.rand(B, T, generator=g) < p_reset).float()
    dones[:, 0] = 1.0
    return x, dones


def train_step(policy: nn.Module, x, dones) -> tuple[float, float, float]:
    """One forward + backward; returns (forward wall s, forward + backward wall s, forward + backward
    process CPU s)."""
    c0, t0 = time.process_time(), time.perf_counter()
    state = policy.initial_state(x.shape[0]) if isinstance(policy, Policy) else None
    out, _ = policy.forward_sequence(x, state, dones)
    loss = out.dist_params.square().mean() + out.value.square().mean()
    t1 = time.perf_counter()
    loss.backward()
    t2, c2 = time.perf_counter(), time.process_time()
    for p in policy.parameters():
        p.grad = None
    return t1 - t0, t2 - t0, c2 - c0


def bench_training(args, kinds: list[str]) -> list[dict]:
    out = []
    policies = {k: build(k, args) for k in kinds}
    for threads in args.threads:
        torch.set_num_threads(threads)
        xw, dw = make_batch(args.batch, min(args.T), args.p_reset, seed=99)
        for k in kinds:  # warm-up (allocator, lazy init) at the smallest T
            train_step(policies[k], xw, dw)
        for T in args.T:
            x, dones = make_batch(args.batch, T, args.p_reset, seed=T)
            reps = args.reps_long if T >= 2000 else args.reps
            res = {k: {"fwd_s": [], "total_s": [], "cpu_s": []} for k in kinds}
            orders = []
            for r in range(reps):
                order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
                orders.append(order)
                for k in order:
                    gc.collect()
                    f, tot, cpu = train_step(policies[k], x, dones)
                    res[k]["fwd_s"].append(round(f, 6))
                    res[k]["total_s"].append(round(tot, 6))
                    res[k]["cpu_s"].append(round(cpu, 6))
                print(f"  train threads={threads} T={T} rep {r + 1}/{reps}: "
                      + " ".join(f"{k}={res[k]['total_s'][-1]:.3f}s" for k in kinds), file=sys.stderr, flush=True)
            out.append({"threads": threads, "T": T, "B": args.batch, "reps": reps,
                        "resets_in_batch": int(dones.sum().item()), "order_per_rep": orders, "results": res})
    return out


PACKED = "/packed"
ZEROS = "+zeros"  # the same step called with an all-zero done_t tensor instead of None
UNFUSED = "-unfused"  # the SSM's PackedStep with the small-batch fused layers off (small_batch_max=0)


def bench_step(args, kinds: list[str]) -> list[dict]:
    from ssm_metarl_ray.models.packed_step import PackedStep

    torch.set_num_threads(1)
    built = {k: build(k, args) for k in kinds if k != REFERENCE}
    # "<kind>": Policy.step (the differentiable reference); "<kind>/packed": PackedStep, the rollout path;
    # "<kind>/packed+zeros": PackedStep called as the rollout workers did before 2026-12-05 (a zeros done_t)
    policies: dict = {}
    for k, pol in built.items():
        policies[k], policies[k + PACKED] = pol, PackedStep(pol)
        policies[k + PACKED + ZEROS] = policies[k + PACKED]
        if k == "ssm":  # "ssm/packed" runs the fused layers at B <= SMALL_BATCH_MAX, this row never does
            policies[k + PACKED + UNFUSED] = PackedStep(pol, small_batch_max=0)
    out = []
    for B in args.step_batches:
        x = torch.randn(B, OBS_DIM + ACT_DIM + 2)
        ones, zeros = torch.ones(B), torch.zeros(B)
        done_arg = {k: zeros if k.endswith(ZEROS) else None for k in policies}
        states = {}
        with torch.no_grad():
            for k, p in policies.items():  # first step of an episode (all done), then warm up
                _, s = p.step(x, p.initial_state(B), ones)
                for _ in range(20):
                    _, s = p.step(x, s, done_arg[k])  # None: no row done, as the workers pass it after t = 0
                states[k] = s
            res = {k: [] for k in policies}
            cpu = {k: [] for k in policies}
            names = list(policies)
            for r in range(args.step_rounds):
                for k in names[r % len(names):] + names[:r % len(names)]:
                    p, s = policies[k], states[k]
                    c0, t0 = time.process_time(), time.perf_counter()
                    for _ in range(args.step_iters):
                        _, s = p.step(x, s, done_arg[k])
                    t1, c1 = time.perf_counter(), time.process_time()
                    res[k].append(round((t1 - t0) / args.step_iters * 1e6, 2))
                    cpu[k].append(round((c1 - c0) / args.step_iters * 1e6, 2))
                    states[k] = s
        out.append({"threads": 1, "B": B, "rounds": args.step_rounds, "steps_per_round": args.step_iters,
                    "unit": "us per Policy.step (wall; cpu_us: process CPU time)", "results": res, "cpu_us": cpu})
        print(f"  step B={B}: " + " ".join(f"{k}={min(v):.0f}us" for k, v in res.items()), file=sys.stderr,
              flush=True)
    return out


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(args) -> None:
    """Runs in a fresh process: measure one forward + backward of each ``--memory-child`` model."""
    torch.set_num_threads(1)
    T = max(args.T)
    out = {}
    for kind in args.memory_child.split(","):
        policy = build(kind, args)
        x, dones = make_batch(args.batch, T, args.p_reset, seed=T)
        gc.collect()
        reset = _reset_peak_rss()
        rss0 = _status_kib("VmRSS") * 1024
        hwm0 = _status_kib("VmHWM") * 1024
        maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        train_step(policy, x, dones)
        hwm1 = _status_kib("VmHWM") * 1024
        maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        saved: dict[tuple, int] = {}

        def pack(t, saved=saved):
            s = t.untyped_storage()
            saved[(s.data_ptr(), t.device.type)] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            state = policy.initial_state(args.batch) if isinstance(policy, Policy) else None
            o, _ = policy.forward_sequence(x, state, dones)
            loss = o.dist_params.square().mean() + o.value.square().mean()
        param_bytes = {p.untyped_storage().data_ptr() for p in policy.parameters()}
        act_saved = sum(n for (ptr, _), n in saved.items() if ptr not in param_bytes)
        del o, loss
        out[kind] = {"rss_before_MB": rss0 / 2**20, "peak_rss_MB": hwm1 / 2**20,
                     "peak_rss_delta_MB": (hwm1 - rss0) / 2**20, "peak_reset_ok": reset and hwm0 <= rss0 + 2**20,
                     "ru_maxrss_before_MB": maxrss0 / 2**20, "ru_maxrss_after_MB": maxrss1 / 2**20,
                     "saved_for_backward_MB": act_saved / 2**20}
    print("MEMORY_JSON " + json.dumps(out))


def bench_memory(args, kinds: list[str]) -> dict:
    groups = [kinds] if args.smoke else [[k] for k in kinds]  # smoke: one process for all (speed)
    res = {}
    for g in groups:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", ",".join(g),
               "--T", str(max(args.T)), "--batch", str(args.batch), "--p-reset", str(args.p_reset),
               "--hidden", str(args.hidden), "--layers", str(args.layers), "--state-size", str(args.state_size),
               "--heads", str(args.heads), "--context", str(args.context)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("MEMORY_JSON ")]
        if p.returncode != 0 or not line:
            raise RuntimeError(f"memory child {g} failed: {p.stderr[-2000:]}")
        res.update(json.loads(line[-1][len("MEMORY_JSON "):]))
        print(f"  memory {g}: " + " ".join(f"{k}={res[k]['peak_rss_delta_MB']:.0f}MB" for k in g), file=sys.stderr,
              flush=True)
    return {"T": max(args.T), "B": args.batch, "threads": 1, "fresh_process_per_model": not args.smoke,
            "method": "peak RSS growth of one forward+backward in a fresh process: VmHWM after it minus VmRSS "
                      "before it, with the peak reset just before (echo 5 > /proc/self/clear_refs) and model and "
                      "data already built (ru_maxrss is kept too, but it carries the parent's peak across "
                      "fork/exec); and bytes of unique storages autograd saves for backward "
                      "(saved_tensors_hooks, parameters excluded)",
            "results": res}


def _stats(v: list[float]) -> dict:
    return {"min": min(v), "median": statistics.median(v)}


def summarize(doc: dict) -> dict:
    s: dict = {"training": [], "step_latency": [], "memory": {}}
    for row in doc["training"]:
        res = row["results"]
        ssm = res["ssm"]["total_s"]
        entry = {"threads": row["threads"], "T": row["T"], "models": {}}
        for k, v in res.items():
            paired = [a / b for a, b in zip(v["total_s"], ssm)]
            entry["models"][k] = {"total_s": _stats(v["total_s"]), "fwd_s": _stats(v["fwd_s"]),
                                  "cpu_s": _stats(v["cpu_s"]),
                                  "ratio_to_ssm_cpu_min": min(v["cpu_s"]) / min(res["ssm"]["cpu_s"]),
                                  "ratio_to_ssm_min": min(v["total_s"]) / min(ssm),
                                  "ratio_to_ssm_paired_median": statistics.median(paired),
                                  "ratio_to_ssm_paired_min": min(paired), "ratio_to_ssm_paired_max": max(paired)}
        s["training"].append(entry)
    for row in doc["step_latency"]:
        models = {}
        for k, v in row["results"].items():  # ratios within a path: Policy.step to SSM's, packed to packed
            path = k[k.index("/"):] if "/" in k else ""
            ref = "ssm" + path if "ssm" + path in row["results"] else "ssm"
            models[k] = {"us": _stats(v), "cpu_us": _stats(row["cpu_us"][k]),
                         "ratio_to_ssm_min": min(v) / min(row["results"][ref]),
                         "ratio_to_ssm_cpu_min": min(row["cpu_us"][k]) / min(row["cpu_us"][ref])}
        s["step_latency"].append({"B": row["B"], "threads": row["threads"], "models": models})
    mem = doc["memory"]["results"]
    for k, v in mem.items():
        s["memory"][k] = {"peak_rss_delta_MB": v["peak_rss_delta_MB"], "saved_for_backward_MB": v["saved_for_backward_MB"],
                          "rss_ratio_to_ssm": v["peak_rss_delta_MB"] / max(mem["ssm"]["peak_rss_delta_MB"], 1e-9),
                          "saved_ratio_to_ssm": v["saved_for_backward_MB"] / max(mem["ssm"]["saved_for_backward_MB"], 1e-9)}
    return s


def render(doc: dict) -> str:
    """Markdown report; every number comes from ``doc`` (the JSON)."""
    m, c, s = doc["meta"], doc["config"], doc["summary"]
    kinds = list(doc["models"])
    L = [f"# Model speed: training cost, rollout step latency, memory{' (SMOKE RUN - not a measurement)' if m['smoke'] else ''}",
         "",
         f"Generated from `{m['json_path']}` by `benchmarks/model_speed.py`; every number below is in that file.",
         "",
         f"Command: `{m['command']}`  ",
         f"Date: {m['date']}; duration {m['duration_s']:.0f} s  ",
         f"Machine: {m['machine']['cpu_model']}, {m['machine']['logical_cpus']} logical CPUs, {m['machine']['platform']}; "
         f"Python {m['python']}, torch {m['torch']}  ",
         f"Load average (1/5/15 min) at start {m['load_average_start']}, at end {m['load_average_end']} "
         "(the machine is shared: absolute times are noisy, ratios are taken within one run, models interleaved).",
         "",
         "## Setup",
         "",
         f"* Policy (`ssm_metarl_ray.models.policy.Policy`, continuous actions) with input dim "
         f"{c['input_dim']} (obs {c['obs_dim']} + action {c['act_dim']} + reward + done), core width H = "
         f"{c['hidden_size']}, {c['num_layers']} layers; SSM P = {c['state_size']} complex modes per layer; "
         f"Transformer {c['num_heads']} heads, context {c['context_len']}; LSTM/GRU hidden {c['hidden_size']}; "
         f"MLP {c['num_layers']} tanh layers. float32, CPU.",
         "* Parameters: " + ", ".join(f"{k} {doc['models'][k]['parameters']:,}" for k in kinds) + ".",
         f"* Training batch: B = {c['batch']} trajectories x T steps; every row starts an episode at t = 0, then a "
         f"reset at each step with probability {c['p_reset']} (resets per batch: "
         + ", ".join(f"T={r['T']}: {r['resets_in_batch']}" for r in doc["training"] if r["threads"] == c["threads"][0])
         + "). Loss = mean(dist_params^2) + mean(value^2); time = forward + backward over all parameters "
           "(`time.perf_counter`), gradients cleared outside the timed region.",
         f"* Repetitions: {c['reps']} per T (T >= 2000: {c['reps_long']}), models in rotating order within each "
         "repetition; min and median reported. Ratio = baseline time / SSM time: process CPU time min/min "
         "(with one thread it leaves out time the core spent on other jobs), wall min/min, and the median "
         "(range) of per-repetition wall ratios (paired: same repetition, adjacent in time).",
         "",
         "## How each model handles resets in sequence mode",
         "",
         "| model | reset handling |", "|---|---|"]
    L += [f"| {k} | {doc['models'][k]['reset_handling']} |" for k in kinds]
    for threads in c["threads"]:
        rows = [e for e in s["training"] if e["threads"] == threads]
        Ts = [e["T"] for e in rows]
        L += ["", f"## Training cost (forward + backward), {threads} thread{'s' if threads > 1 else ''}", "",
              "Seconds per batch: wall min / wall median; CPU min:", "",
              "| model | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---|" * len(Ts)]
        for k in kinds:
            L.append(f"| {k} | " + " | ".join(
                f"{e['models'][k]['total_s']['min']:.3f} / {e['models'][k]['total_s']['median']:.3f}; "
                f"{e['models'][k]['cpu_s']['min']:.3f}" for e in rows) + " |")
        L += ["", "**Ratio to the SSM** (baseline time / SSM time): CPU min/min; wall min/min; wall paired median "
              "(range over repetitions):", "",
              "| model | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---|" * len(Ts)]
        for k in kinds:
            if k == "ssm":
                continue
            L.append(f"| {k} | " + " | ".join(
                f"**{e['models'][k]['ratio_to_ssm_cpu_min']:.2f}**; {e['models'][k]['ratio_to_ssm_min']:.2f}; "
                f"{e['models'][k]['ratio_to_ssm_paired_median']:.2f} "
                f"({e['models'][k]['ratio_to_ssm_paired_min']:.2f}-{e['models'][k]['ratio_to_ssm_paired_max']:.2f})"
                for e in rows) + " |")
        L += ["", "Forward only, seconds (min): " + "; ".join(
            f"T={e['T']}: " + ", ".join(f"{k} {e['models'][k]['fwd_s']['min']:.3f}" for k in kinds) for e in rows) + "."]
    L += ["", "## Rollout step latency (under `torch.no_grad()`, 1 thread, actor + log-std + critic heads)", "",
          "`<model>`: `Policy.step`, the differentiable reference; `<model>/packed`: "
          "`models/packed_step.PackedStep`, what the rollout workers run (weights packed once per rollout: heads "
          "in one `addmm`, the SSM recurrence in real form as two GEMMs; other cores use their own step). "
          "Microseconds per step: wall min / wall median; CPU min; ratio = CPU min / the SSM's CPU min on the same "
          "path (a ratio above 1: slower than the SSM); `<model>/packed+zeros`: the same packed step called with an "
          "all-zero `done_t` tensor, as the rollout workers called it before 2026-12-05 (a reset check every "
          "step), where `<model>/packed` gets `done_t=None`; `ssm/packed-unfused`: the SSM's packed step without "
          "the fused small-batch layers (`PackedStep(policy, small_batch_max=0)`; `ssm/packed` uses them at B <= "
          f"{c.get('small_batch_max', '?')}, one GEMM for the state and the readout):", "",
          "| model | " + " | ".join(f"B={e['B']}" for e in s["step_latency"]) + " |",
          "|---|" + "---|" * len(s["step_latency"])]
    step_kinds = list(s["step_latency"][0]["models"]) if s["step_latency"] else []
    for k in step_kinds:
        L.append(f"| {k} | " + " | ".join(
            f"{e['models'][k]['us']['min']:.0f} / {e['models'][k]['us']['median']:.0f}; {e['models'][k]['cpu_us']['min']:.0f} "
            f"({e['models'][k]['ratio_to_ssm_cpu_min']:.2f}x)"
            for e in s["step_latency"]) + " |")
    if doc["step_latency"]:
        r0 = doc["step_latency"][0]
        L += ["", f"{r0['rounds']} rounds of {r0['steps_per_round']} steps per model and batch; steady state "
              "(`done_t=None`, no row done, as the rollout workers call it after an episode's first step; a "
              "reset step adds the state masking)."]
    mem = doc["memory"]
    L += ["", f"## Memory at T = {mem['T']} (B = {mem['B']}, one forward + backward, 1 thread)", "",
          f"Method: {mem['method']}. "
          + ("One fresh process per model." if mem["fresh_process_per_model"] else "Smoke run: one process for all models."),
          "", "| model | peak RSS growth (MB) | x SSM | saved for backward (MB) | x SSM |", "|---|---|---|---|---|"]
    for k in kinds:
        v = s["memory"][k]
        L.append(f"| {k} | {v['peak_rss_delta_MB']:.0f} | {v['rss_ratio_to_ssm']:.2f} | "
                 f"{v['saved_for_backward_MB']:.0f} | {v['saved_ratio_to_ssm']:.2f} |")
    L += ["", "## Notes", "",
          "* LSTM/GRU and the Transformer are this repository's cores (`ssm_metarl_ray/models`), the same code the "
          "trainers run. `lstm_fused_noreset` is not a usable model for these batches (it ignores resets).",
          "* Threads: " + m["threads_note"],
          "* Step latency at these sizes is dominated by per-op dispatch and Python overhead, not arithmetic: the "
          "fused ATen LSTM/GRU cells run a whole layer in one call, while a packed SSM layer is nine small ops "
          "(LayerNorm, two GEMMs for the state, readout GEMM + D u, GELU, GLU GEMM, GLU, residual), seven in the "
          "fused small-batch form (LayerNorm, a `cat` and one GEMM for state and readout together, GELU, GLU "
          "GEMM, GLU, residual; larger GEMMs, so it pays only at small batches; its intermediates go to buffers "
          "made once and its GEMMs read column views of them, so no weight carries zero rows). "
          "`benchmarks/step_processes.py` repeats the packed-step rows in several fresh processes: a single "
          "process's ratio at batch 1 moves by a few percent from one process to the next.",
          "* Large fresh allocations are page-fault bound on this VM (glibc returns big blocks to the OS on free), "
          "which inflates every model's time at large T.", ""]
    return "\n".join(L)


def machine_info() -> dict:
    model = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_total = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu_model": model, "logical_cpus": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "mem_total_MB": mem_total}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition, writes to a temp directory")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/model_speed.json; "
                   "--smoke: a temp directory); the .md report goes next to it unless --report")
    p.add_argument("--report", default=None, help="Markdown path (default benchmarks/MODEL_SPEED.md for a full run)")
    p.add_argument("--T", type=int, nargs="+", default=[200, 1000, 4000])
    p.add_argument("--threads", type=int, nargs="+", default=[1],
                   help="torch thread counts for the training benchmark (default 1; see THREADS_NOTE)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--p-reset", type=float, default=0.01)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--reps-long", type=int, default=3, help="repetitions for T >= 2000")
    p.add_argument("--step-batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--step-rounds", type=int, default=15)
    p.add_argument("--step-iters", type=int, default=100)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--state-size", type=int, default=32)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--no-reference", action="store_true", help="skip the fused nn.LSTM reference")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.T, args.threads, args.reps, args.reps_long = [16, 40], [1], 1, 1
        args.step_batches, args.step_rounds, args.step_iters = [1, 4], 2, 5
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    if args.memory_child:
        memory_child(args)
        return {}
    t_start = time.time()
    load0 = [round(x, 2) for x in os.getloadavg()]
    default_threads = torch.get_num_threads()
    kinds = list(MODELS) + ([] if args.no_reference else [REFERENCE])
    if args.out:
        json_path = Path(args.out)
    elif args.smoke:
        json_path = Path(tempfile.mkdtemp(prefix="model_speed_smoke_")) / "model_speed.json"
    else:
        json_path = RESULTS
    report_path = Path(args.report) if args.report else (
        REPORT if json_path == RESULTS else json_path.with_name("MODEL_SPEED.md"))
    cmd = "python benchmarks/model_speed.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(
        sys.argv[1:] if argv is None else argv))

    print("training ...", file=sys.stderr, flush=True)
    training = bench_training(args, kinds)
    print("step latency ...", file=sys.stderr, flush=True)
    step = bench_step(args, kinds)
    print("memory ...", file=sys.stderr, flush=True)
    memory = bench_memory(args, kinds)

    models = {}
    for k in kinds:
        pol = build(k, args)
        models[k] = {"parameters": sum(p.numel() for p in pol.parameters()), "reset_handling": RESET_HANDLING[k],
                     "correct_with_resets": k != REFERENCE}
    doc = {
        "benchmark": "model_speed",
        "meta": {"command": cmd, "argv": sys.argv[1:] if argv is None else list(argv), "smoke": args.smoke,
                 "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                 "duration_s": time.time() - t_start, "python": sys.version.split()[0], "torch": torch.__version__,
                 "torch_default_threads": default_threads, "machine": machine_info(),
                 "load_average_start": load0, "threads_note": THREADS_NOTE, "load_average_end": [round(x, 2) for x in os.getloadavg()],
                 "json_path": str(json_path.relative_to(ROOT)) if json_path.is_relative_to(ROOT) else str(json_path)},
        "config": {"obs_dim": OBS_DIM, "act_dim": ACT_DIM, "input_dim": OBS_DIM + ACT_DIM + 2,
                   "hidden_size": args.hidden, "num_layers": args.layers, "state_size": args.state_size,
                   "num_heads": args.heads, "context_len": args.context, "batch": args.batch,
                   "p_reset": args.p_reset, "dtype": "float32", "T": args.T, "threads": args.threads,
                   "reps": args.reps, "reps_long": args.reps_long, "step_batches": args.step_batches,
                   "small_batch_max": SMALL_BATCH_MAX},
        "models": models,
        "training": training,
        "step_latency": step,
        "memory": memory,
    }
    doc["summary"] = summarize(doc)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    report_path.write_text(render(json.loads(json_path.read_text())))
    print(f"wrote {json_path} and {report_path}", file=sys.stderr)
    doc["paths"] = {"json": str(json_path), "report": str(report_path)}
    return doc


if __name__ == "__main__":
    main()
