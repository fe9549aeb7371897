"""Offline checks of the deployment files: cluster/, Dockerfile, .dockerignore.

- Launcher YAMLs go through Ray's own `prepare_config` + `validate_config` (what `ray up` runs).
- KubeRay manifests are validated against the vendored CRD openAPIV3Schema (skipped without it).
- Every Ray version / image tag equals the installed Ray; the Dockerfile parses and matches pyproject.
No cluster, network or Docker daemon is needed; `test_submit_script_end_to_end` (slow) starts a Ray head.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER_CONFIGS = ["aws.yaml", "gcp.yaml"]
K8S_MANIFESTS = {"raycluster.yaml": "ray.io_rayclusters.yaml", "rayjob.yaml": "ray.io_rayjobs.yaml"}
RAY_VERSION = ray.__version__
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT_VERSION = PYPROJECT["project"]["version"]
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-2 MB


def load_yaml(path: Path):
    with open(path) as f:
        return yaml.load(f, Loader=YAML_LOADER)


def python_tag_ok(tag: str) -> bool:
    """`py311` -> is 3.11 allowed by requires-python?"""
    from packaging.specifiers import SpecifierSet

    major, minor = tag[2], tag[3:]
    return SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"{major}.{minor}")


# --------------------------------------------------------------------------- cluster launcher (ray up)
def prepared(name: str) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(load_yaml(CLUSTER / name)))
    validate_config(config)
    return config


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_ray_validation(name):
    raw = load_yaml(CLUSTER / name)
    config = prepared(name)

    docker = raw["docker"]
    assert docker["image"] == f"rayproject/ray:{RAY_VERSION}-py311-cpu"
    assert any(opt.startswith("--shm-size") for opt in docker["run_options"])

    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "no rollouts on the head"
    workers = {k: v for k, v in types.items() if k != raw["head_node_type"]}
    cpu = [v for v in workers.values() if not v["resources"].get("GPU")]
    gpu = [v for v in workers.values() if v["resources"].get("GPU")]
    assert cpu and all(v["max_workers"] > v.get("min_workers", 0) for v in cpu), "autoscaling CPU type"
    assert gpu and all(v["docker"]["worker_image"] == f"rayproject/ray:{RAY_VERSION}-py311-gpu" for v in gpu)

    for cmd in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[cmd] if "ray start" in c]
        assert starts and all("--disable-usage-stats" in c for c in starts), cmd
    assert any("pip install" in c and "ssm_metarl_ray" in c for c in config["setup_commands"])
    if raw["provider"]["type"] == "gcp":
        assert raw["provider"].get("project_id"), "GCP needs provider.project_id"


def docker_env(config: dict) -> dict:
    pairs = [o.split("=", 1)[1] for o in config["docker"]["run_options"] if o.startswith("--env=")]
    return dict(p.split("=", 1) for p in pairs)


def test_launcher_auth_mode_is_consistent():
    """Same RAY_AUTH_MODE on both clouds, set for every container; token mode ships the token file."""
    envs = [docker_env(load_yaml(CLUSTER / n)) for n in LAUNCHER_CONFIGS]
    modes = {e.get("RAY_AUTH_MODE") for e in envs}
    assert len(modes) == 1 and modes <= {"token", "disabled"}, modes
    for name, env in zip(LAUNCHER_CONFIGS, envs):
        if env["RAY_AUTH_MODE"] == "token":
            token_dir = os.path.dirname(env["RAY_AUTH_TOKEN_PATH"]).replace("/home/ray/", "~/")
            assert token_dir in load_yaml(CLUSTER / name)["file_mounts"], f"{name}: token not mounted"


@pytest.mark.parametrize("where", ["top", "node_type", "docker"])
def test_launcher_rejects_unknown_key(where):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_yaml(CLUSTER / "aws.yaml")
    target = {"top": config, "node_type": config["available_node_types"]["rollout_cpu"],
              "docker": config["docker"]}[where]
    target["max_wrokers"] = 3  # typo
    with pytest.raises(jsonschema.ValidationError, match="max_wrokers"):
        validate_config(prepare_config(config))


# --------------------------------------------------------------------------- KubeRay manifests
def schema_dir() -> Path | None:
    candidates = [os.environ.get("KUBERAY_SCHEMA_DIR"), ROOT / "shared/schemas/kuberay",
                  ROOT.parent / "shared/schemas/kuberay"]
    for c in candidates:
        if c and all((Path(c) / crd).is_file() for crd in K8S_MANIFESTS.values()):
            return Path(c)
    return None


@pytest.fixture(scope="module")
def crd_validators():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema missing (ray[default] brings it)")
    folder = schema_dir()
    if folder is None:
        pytest.skip("KubeRay CRDs not found (shared/schemas/kuberay or $KUBERAY_SCHEMA_DIR)")
    validators = {}
    for manifest, crd in K8S_MANIFESTS.items():
        versions = load_yaml(folder / crd)["spec"]["versions"]
        schema = next(v for v in versions if v["name"] == "v1")["schema"]["openAPIV3Schema"]
        validators[manifest] = jsonschema.validators.validator_for(schema)(schema)
    return validators


def cluster_spec(manifest: dict) -> dict:
    return manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]


def pod_specs(spec: dict) -> list[dict]:
    workers = [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    return [spec["headGroupSpec"]["template"]["spec"], *workers]


@pytest.mark.parametrize("name", list(K8S_MANIFESTS))
def test_kuberay_manifest_matches_crd_schema(name, crd_validators):
    manifest = load_yaml(CLUSTER / "k8s" / name)
    assert manifest["apiVersion"] == "ray.io/v1"
    validator = crd_validators[name]
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(manifest)]
    assert not errors, errors

    # The schema is structural (unknown keys pass), so prove it checks something: enum + required.
    broken = copy.deepcopy(manifest)
    cluster_spec(broken)["authOptions"]["mode"] = "tokens"
    del cluster_spec(broken)["workerGroupSpecs"][0]["groupName"]
    messages = " ".join(e.message for e in validator.iter_errors(broken))
    assert "'tokens' is not one of" in messages and "'groupName' is a required property" in messages


@pytest.mark.parametrize("name", list(K8S_MANIFESTS))
def test_kuberay_cluster_layout(name):
    spec = cluster_spec(load_yaml(CLUSTER / "k8s" / name))
    assert spec["rayVersion"] == RAY_VERSION
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True and spec["autoscalerOptions"]["version"] == "v2"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"

    for pod in pod_specs(spec):
        shm = {v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"}
        for c in pod["containers"]:
            assert c["image"].startswith("ghcr.io/ssm-metarl/ssm-metarl-ray:"), c["image"]
            assert c["resources"].get("requests") and c["resources"].get("limits"), c["name"]
            assert any(m["mountPath"] == "/dev/shm" and m["name"] in shm for m in c["volumeMounts"])

    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = [g for g in groups.values()
           if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu and all(g["minReplicas"] == 0 for g in gpu)
    assert all(g["template"]["spec"]["containers"][0]["image"].endswith("-gpu") for g in gpu)
    assert any(g not in gpu and g["maxReplicas"] > g["minReplicas"] for g in groups.values()), "CPU group"
    if name == "raycluster.yaml":
        assert all(g["replicas"] == 0 for g in gpu)


def test_rayjob_sweep_settings_and_shared_storage():
    job = load_yaml(CLUSTER / "k8s" / "rayjob.yaml")["spec"]
    assert "ssm-metarl tune --config tune_configs/hybrid_sweep.yaml" in job["entrypoint"]
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0
    assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] == 0
    yaml.safe_load(job["runtimeEnvYAML"])  # embedded YAML must parse

    storage = re.search(r"--storage-path\s+(\S+)", job["entrypoint"]).group(1)
    if not re.match(r"^(s3|gs|abfss?)://", storage):
        # A local path must be a shared (PVC) volume mounted on every pod, not per-pod disk.
        for pod in pod_specs(job["rayClusterSpec"]):
            pvcs = {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
            mounts = [m for c in pod["containers"] for m in c["volumeMounts"] if m["name"] in pvcs]
            assert any(storage.startswith(m["mountPath"]) for m in mounts), f"{storage} not shared"
    pvc = load_yaml(CLUSTER / "k8s" / "results-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]


# --------------------------------------------------------------------------- versions everywhere
def deployment_files() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.is_file()) + [ROOT / "Dockerfile"]


def test_every_ray_version_matches_installed_ray():
    dep = next(d for d in PYPROJECT["project"]["dependencies"] if d.replace(" ", "").startswith("ray["))
    assert dep.endswith(f"=={RAY_VERSION}"), dep

    found = 0
    for path in deployment_files():
        text = path.read_text()
        where = path.relative_to(ROOT)
        for tag in re.findall(r"rayproject/ray(?:-ml)?:([\w.\-]+)", text):
            found += 1
            assert tag.startswith(f"{RAY_VERSION}-"), f"{where}: rayproject/ray:{tag}"
            py = re.search(r"-(py\d{3,})", tag)
            assert py and python_tag_ok(py.group(1)), f"{where}: {tag} vs requires-python"
        for tag in re.findall(r"RAY_TAG=([\w.\-]+)", text):
            found += 1
            assert tag.startswith(f"{RAY_VERSION}-"), f"{where}: RAY_TAG={tag}"
        for v in re.findall(r"rayVersion:\s*[\"']?([\w.]+)", text):
            found += 1
            assert v == RAY_VERSION, f"{where}: rayVersion {v}"
        for v in re.findall(r"\bray\[[^\]]*\]==([\w.]+)", text):
            found += 1
            assert v == RAY_VERSION, f"{where}: ray=={v}"
        for v in re.findall(r"\bRay (\d+\.\d+\.\d+)\b", text):
            assert v == RAY_VERSION, f"{where}: Ray {v}"
        for tag in re.findall(r"ssm-metarl-ray:([\w.\-]+)", text):
            found += 1
            assert tag.split("-")[0] == PROJECT_VERSION, f"{where}: project image tag {tag}"
    assert found >= 15, "version scan matched suspiciously little"


# --------------------------------------------------------------------------- Dockerfile
DOCKER_INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                       "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
                       "MAINTAINER"}


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; comments dropped, backslash continuations joined."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, args = line.partition(" ")
        if word.upper() not in DOCKER_INSTRUCTIONS:
            raise ValueError(f"unknown instruction {word!r}")
        out.append((word.upper(), args.strip()))
    if pending:
        raise ValueError("dangling line continuation")
    return out


def resolve_base_image(instructions: list[tuple[str, str]]) -> str:
    """Only ARG may precede the first FROM; substitute those ARG defaults into the FROM image."""
    args = {}
    for word, rest in instructions:
        if word == "FROM":
            image = rest.split()[0]
            if "$" not in image:
                raise ValueError("FROM does not use the build ARG")
            return re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], image)
        if word != "ARG":
            raise ValueError(f"{word} before FROM")
        name, _, default = rest.partition("=")
        args[name] = default.strip("\"'")
    raise ValueError("no FROM")


def test_dockerfile_parses_and_matches_pyproject():
    instructions = parse_dockerfile((ROOT / "Dockerfile").read_text())
    words = [w for w, _ in instructions]
    assert words.count("FROM") == 1
    image = resolve_base_image(instructions)
    assert image == f"rayproject/ray:{RAY_VERSION}-py311-cpu", image
    assert python_tag_ok(re.search(r"-(py\d+)", image).group(1))

    runs = [r for w, r in instructions if w == "RUN"]
    assert any(re.search(r"pip install --no-cache-dir \.(\s|$)", r) for r in runs), runs
    assert "COPY" in words
    env = " ".join(r for w, r in instructions if w == "ENV")
    assert re.search(r"\bMUJOCO_GL=\w+", env), env

    cmd = [r for w, r in instructions if w == "CMD"]
    assert len(cmd) == 1 and words[-1] == "CMD"
    argv = json.loads(cmd[0])  # exec form
    assert argv[0] in PYPROJECT["project"]["scripts"] and argv[1:] == ["--help"]


@pytest.mark.parametrize("text, error", [
    ("ARG RAY_TAG=x\nFORM rayproject/ray:${RAY_TAG}\nCMD [\"a\"]\n", "unknown instruction"),
    ("FROM rayproject/ray:2.60.0-py311-cpu\nCMD [\"a\"]\n", "does not use the build ARG"),
    ("RUN true\nFROM rayproject/ray:${RAY_TAG}\n", "RUN before FROM"),
    ("ARG RAY_TAG=x\nFROM rayproject/ray:${RAY_TAG}\nRUN a \\\n", "dangling"),
])
def test_dockerfile_checker_rejects_broken_files(text, error):
    with pytest.raises(ValueError, match=error):
        resolve_base_image(parse_dockerfile(text))


def test_dockerignore_keeps_local_state_out_and_sources_in():
    entries = {ln.strip().rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".venv", "runs", ".git"} <= entries
    assert any("__pycache__" in e for e in entries)
    assert not entries & {"ssm_metarl_ray", "pyproject.toml", "tune_configs", "README.md", "LICENSE", "*"}


# --------------------------------------------------------------------------- runtime env, submit.sh
def test_runtime_env_is_offline_and_valid_for_ray():
    from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args  # what `ray job submit` uses
    from ray.runtime_env import RuntimeEnv

    env = parse_runtime_env_args(runtime_env=str(CLUSTER / "runtime_env.yaml"))
    assert set(env) == {"working_dir", "excludes", "env_vars"}, "offline: no pip/conda/uv/py_executable"
    RuntimeEnv(**env)  # type checks (env_vars must be str -> str)
    assert env["working_dir"] == "."
    assert {".git/", ".venv/", "runs/"} <= set(env["excludes"])


def test_submit_script_shape():
    text = (CLUSTER / "submit.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert os.access(CLUSTER / "submit.sh", os.X_OK)
    auth = text.index('export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"')
    assert auth < text.index("ray start --head")
    assert "--disable-usage-stats" in text and "--runtime-env cluster/runtime_env.yaml" in text
    assert "SUCCEEDED" in text
    bash = shutil.which("bash")
    if bash:
        r = subprocess.run([bash, "-n", str(CLUSTER / "submit.sh")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ray
def test_submit_script_end_to_end(tmp_path):
    """Private head on free ports, token auth with an empty HOME, a trivial job -> SUCCEEDED (~50 s).
    Another local Ray cluster runs meanwhile: the job's driver must attach to the script's head, not to it
    (Ray's job supervisor resolves the driver's address from its temp dir, else from any GCS process)."""
    env = {**os.environ, "HOME": str(tmp_path), "RAY_AUTH_MODE": "token", "NUM_CPUS": "1",
           "LOG_DIR": str(tmp_path), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "RAY_PORT": str(free_port()), "DASHBOARD_PORT": str(free_port()), "CLIENT_PORT": str(free_port()),
           "AGENT_PORT": str(free_port()), "TIMEOUT_S": "180"}
    env.pop("RAY_ADDRESS", None)
    decoy = subprocess.Popen([sys.executable, "-c", "import ray, time; ray.init(address='local', num_cpus=1, "
                              "include_dashboard=False); print('up', flush=True); time.sleep(600)"],
                             env={**env, "RAY_AUTH_MODE": "disabled"}, stdout=subprocess.PIPE, text=True)
    try:
        assert decoy.stdout is not None and decoy.stdout.readline().strip() == "up"
        job = ("import ray; ray.init(); print('ANSWER', ray.get(ray.remote(lambda: 40 + 2).remote()), "
               "'GCS', ray.get_runtime_context().gcs_address)")
        r = subprocess.run([str(CLUSTER / "submit.sh"), "--", "python", "-c", job], env=env,
                           capture_output=True, text=True, timeout=300)
    finally:
        decoy.send_signal(signal.SIGINT)  # KeyboardInterrupt: its ray.shutdown() at exit stops its cluster
        decoy.wait(timeout=60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ANSWER 42" in r.stdout + r.stderr and "finished: SUCCEEDED" in r.stdout
    assert re.search(rf"GCS \S+:{env['RAY_PORT']}\b", r.stdout + r.stderr), r.stdout[-3000:]
    assert (tmp_path / ".ray" / "auth_token").is_file()
