"""The Ray executor's start check (``executors/capacity.py``): GPU and CPU requests of the stages
that run together against the cluster, on the real stages of the shipped pipelines.

One local Ray per module, started with logical GPUs (``num_gpus=1`` works on a machine without
one): the check reads that cluster's nodes as the executor does, and one test goes through the
real ``RayExecutor`` constructor, which must refuse before it creates any actor. Shapes Ray
cannot be started with here (several GPUs, several nodes) are given to the check as node lists.
Loading a pipeline YAML needs no model, so the GPU pipelines load on this CPU machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import ray
import yaml

from granary_pipe import bundled
from granary_pipe.config import load_pipeline
from granary_pipe.executors import capacity
from granary_pipe.executors import ray as ray_executor
from granary_pipe.executors.capacity import CapacityError
from granary_pipe.llm import VllmOptions
from granary_pipe.stage import Resources, Stage

ONE_GPU_CPUS = 16


@pytest.fixture(scope="module")
def one_gpu_ray():
    """A fresh local Ray with 16 logical CPUs and 1 logical GPU; yields its nodes as the executor reads them."""
    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=ONE_GPU_CPUS, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield ray_executor.cluster_nodes()
    finally:
        ray.shutdown()


def stages_of(name: str) -> list[Stage]:
    """The real stages of a bundled pipeline."""
    return load_pipeline(bundled.pipeline_path(name))[1]


def gpu_pipelines() -> list[str]:
    """Bundled curation pipelines in which some stage reserves a GPU."""
    return [n for n in bundled.pipeline_names() if any(s.resources.gpus > 0 for s in stages_of(n))]


def variant(stages: list[Stage], name: str, **update) -> list[Stage]:
    """``stages`` with the stage called ``name`` changed (``resources=``, ``workers=``, parameters)."""
    assert any(s.name == name for s in stages), name
    return [s.model_copy(update=update) if s.name == name else s for s in stages]


def refusal(stages: list[Stage], nodes: list[dict]) -> str:
    with pytest.raises(CapacityError) as info:
        capacity.check(stages, nodes, ray_executor.COMMIT_CPUS)
    return str(info.value)


# ----------------------------------------------------------------------------- on the real 1-GPU Ray

def test_the_cluster_is_read_per_node(one_gpu_ray):
    (node,) = one_gpu_ray
    assert node["GPU"] == 1 and node["CPU"] == ONE_GPU_CPUS


def test_granary_gpu_is_refused_on_one_gpu_with_every_share_and_the_way_out(one_gpu_ray):
    msg = refusal(stages_of("granary-gpu"), one_gpu_ray)
    assert "needs 3 GPUs at once but the Ray cluster has 1" in msg, msg
    for line in ("asr.language_id: 0.25 GPU x 1 worker(s) = 0.25", "asr.whisper: 0.75 GPU x 1 worker(s) = 0.75",
                 "pnc.llm: 1 GPU x 1 worker(s) = 1", "translate.llm: 1 GPU x 1 worker(s) = 1"):
        assert line in msg, msg
    assert "total at once: 3 GPUs" in msg and "the cluster has 1" in msg
    assert "lower resources.gpus or workers" in msg and f"granary run {capacity.ONE_GPU_PIPELINE}" in msg


def test_the_one_gpu_pipeline_fits_the_one_gpu_ray(one_gpu_ray):
    capacity.check(stages_of(capacity.ONE_GPU_PIPELINE), one_gpu_ray, ray_executor.COMMIT_CPUS)


def test_a_gpu_task_beside_the_actors_is_counted(one_gpu_ray):
    """A task stage reserving a GPU share runs beside actors that already hold the whole GPU."""
    stages = variant(stages_of(capacity.ONE_GPU_PIPELINE), "segment.silero", resources=Resources(cpus=1, gpus=0.2))
    msg = refusal(stages, one_gpu_ray)
    assert "needs 1.2 GPUs at once" in msg and "segment.silero: 0.2 GPU per call (task" in msg, msg


def test_ray_itself_never_refuses_it_but_waits(one_gpu_ray):
    """Why the check exists: Ray queues a GPU task that finds no room beside GPU actors, silently."""
    @ray.remote(num_cpus=0, num_gpus=1)
    class Holder:
        def ping(self) -> int:
            return 1

    @ray.remote(num_cpus=0, num_gpus=0.5)
    def share() -> int:
        return 2

    holder = Holder.remote()
    assert ray.get(holder.ping.remote(), timeout=60) == 1
    ref = share.remote()
    ready, _ = ray.wait([ref], timeout=2.0)
    assert not ready, "Ray ran a task for which it had no GPU left"
    ray.kill(holder)
    assert ray.get(ref, timeout=60) == 2  # it was only waiting


def test_executor_refuses_before_creating_any_actor(one_gpu_ray, tmp_path, monkeypatch):
    class NoActors:
        @staticmethod
        def options(**_):
            raise AssertionError("an actor was created before the capacity check")

    monkeypatch.setattr(ray_executor, "StageActor", NoActors)
    with pytest.raises(CapacityError, match="needs 3 GPUs at once but the Ray cluster has 1"):
        ray_executor.RayExecutor(stages_of("granary-gpu"), tmp_path)
    assert ray.is_initialized(), "the executor stopped a Ray it did not start"


def test_executor_creates_actors_largest_gpu_share_first(one_gpu_ray, tmp_path, monkeypatch):
    created: list[tuple[str, float]] = []

    class Recorder:
        @staticmethod
        def options(**opts):
            class Handle:
                @staticmethod
                def remote(stage):
                    created.append((stage.name, opts["num_gpus"]))
                    return object()
            return Handle

    monkeypatch.setattr(ray_executor, "StageActor", Recorder)
    executor = ray_executor.RayExecutor(stages_of(capacity.ONE_GPU_PIPELINE), tmp_path)
    assert created == [("translate.llm", 0.35), ("asr.whisper", 0.3), ("pnc.llm", 0.25),
                       ("asr.language_id", 0.1), ("filter.text_lang", 0.0)]
    assert sorted(executor.actors) == [i for i, s in enumerate(executor.stages) if s.actor]


# ----------------------------------------------------------------------------- the shipped GPU pipelines

def sized_for(name: str) -> dict[str, float]:
    """``# Sized for: N GPU(s) ... M CPUs`` from the pipeline's header comment."""
    path = bundled.pipeline_path(name)
    header = path.read_text(encoding="utf-8").split("\nname:", 1)[0]
    m = re.search(r"^# Sized for: (\d+) GPUs?\b.*?(\d+) CPUs", header, re.M | re.S)
    assert m, f"{path}: the header names no 'Sized for: N GPUs ... M CPUs'"
    return {"GPU": float(m[1]), "CPU": float(m[2])}


def test_there_are_gpu_pipelines_for_several_gpus_and_for_one():
    names = gpu_pipelines()
    assert "granary-gpu" in names and capacity.ONE_GPU_PIPELINE in names, names
    assert sized_for(capacity.ONE_GPU_PIPELINE)["GPU"] == 1


@pytest.mark.parametrize("name", gpu_pipelines())
def test_each_gpu_pipeline_fits_the_cluster_its_header_names_and_no_fewer_gpus(name):
    size = sized_for(name)
    stages = stages_of(name)
    capacity.check(stages, [size], ray_executor.COMMIT_CPUS)
    refusal(stages, [{**size, "GPU": size["GPU"] - 1}])


def test_the_one_gpu_pipeline_has_the_same_stages_as_granary_gpu():
    def shape(name: str) -> list[str]:
        data = yaml.safe_load(Path(bundled.pipeline_path(name)).read_text(encoding="utf-8"))
        return [s["use"] for s in data["stages"]]

    assert shape(capacity.ONE_GPU_PIPELINE) == shape("granary-gpu")


def test_granary_gpu_fits_three_one_gpu_nodes_beside_a_cpu_head():
    """The shape of docker/ray-cluster.yaml: a CPU-only head and three 1-GPU workers."""
    capacity.check(stages_of("granary-gpu"), [{"CPU": 8}] + [{"CPU": 8, "GPU": 1}] * 3, ray_executor.COMMIT_CPUS)


# ----------------------------------------------------------------------------- shapes the sum alone misses

def test_shares_below_one_must_fit_on_one_gpu():
    """Three 0.6 shares add up to 1.8 of 2 GPUs, but no GPU holds two of them: Ray would wait forever."""
    stages = variant(stages_of(capacity.ONE_GPU_PIPELINE), "asr.whisper", workers=3,
                     resources=Resources(cpus=1, gpus=0.6))
    stages = [s for s in stages if s.name not in ("asr.language_id", "pnc.llm", "translate.llm")]
    msg = refusal(stages, [{"CPU": 16, "GPU": 2}])
    assert "worker 3 of asr.whisper (actor) fits on no node" in msg and "a GPU share below 1 from one GPU" in msg, msg
    assert "GPUs free [0.4, 0.4]" in msg and "0.6 GPU x 3 worker(s) = 1.8" in msg, msg


def test_one_worker_takes_its_gpus_and_cpus_from_one_node():
    stages = variant(stages_of("granary-gpu"), "pnc.llm", resources=Resources(cpus=4, gpus=2))
    stages = variant(stages, "pnc.llm", backend=VllmOptions(tensor_parallel_size=2))
    two_nodes = [{"CPU": 16, "GPU": 2}, {"CPU": 16, "GPU": 2}]
    capacity.check(stages, two_nodes, ray_executor.COMMIT_CPUS)  # 4 GPUs: 2 for pnc on one node
    msg = refusal(stages, [{"CPU": 8, "GPU": 1}] * 4)  # 4 GPUs too, but one per node
    assert "worker 1 of pnc.llm (actor) fits on no node" in msg, msg
    msg = refusal(variant(stages_of("demo"), "asr.two_pass", workers=1, resources=Resources(cpus=5)),
                  [{"CPU": 4}, {"CPU": 4}])
    assert "asr.two_pass (actor) fits on no node" in msg and "each worker fits one node" in msg, msg


def test_more_than_one_gpu_must_be_whole():
    msg = refusal(variant(stages_of("granary-gpu"), "pnc.llm", resources=Resources(cpus=4, gpus=1.5)),
                  [{"CPU": 32, "GPU": 8}])
    assert "resources.gpus 1.5" in msg and "whole" in msg, msg


# ----------------------------------------------------------------------------- what the stages' own parameters need

def test_a_stage_on_cuda_must_reserve_a_gpu():
    msg = refusal(variant(stages_of("granary-gpu"), "asr.whisper", resources=Resources(cpus=4)),
                  [{"CPU": 32, "GPU": 8}])
    assert "stage asr.whisper runs on a GPU (device=cuda) but reserves none" in msg, msg
    msg = refusal(variant(stages_of("granary-gpu"), "translate.llm", resources=Resources(cpus=4)),
                  [{"CPU": 32, "GPU": 8}])
    assert "translate.llm runs on a GPU (backend vllm)" in msg, msg


def test_tensor_parallel_needs_as_many_gpus():
    stages = variant(stages_of("granary-gpu"), "translate.llm", backend=VllmOptions(tensor_parallel_size=2))
    msg = refusal(stages, [{"CPU": 32, "GPU": 8}])
    assert "drives 2 GPUs (tensor_parallel_size) but reserves 1: set resources.gpus: 2" in msg, msg


def test_vllm_memory_claims_stay_inside_the_gpu_share():
    """Two LLMs on halves of one GPU, each claiming vLLM's default 0.9 of its memory: 1.8 GPUs of memory."""
    half = Resources(cpus=2, gpus=0.5)
    stages = variant(variant(stages_of(capacity.ONE_GPU_PIPELINE), "pnc.llm", resources=half), "translate.llm",
                     resources=half, backend=VllmOptions(model="eurollm-9b-instruct"))
    stages = [s for s in stages if s.name not in ("asr.language_id", "asr.whisper")]
    msg = refusal(stages, [{"CPU": 12, "GPU": 1}])
    assert "translate.llm: backend vllm claims gpu_memory_utilization 0.9" in msg, msg
    assert "reserves a 0.5 share" in msg and "gpu_memory_utilization <= 0.5" in msg, msg
    fixed = variant(stages, "translate.llm", backend=VllmOptions(gpu_memory_utilization=0.5))
    fixed = variant(fixed, "pnc.llm", backend=VllmOptions(gpu_memory_utilization=0.45))
    capacity.check(fixed, [{"CPU": 12, "GPU": 1}], ray_executor.COMMIT_CPUS)


def test_shipped_vllm_stages_claim_no_more_memory_than_their_share():
    for name in gpu_pipelines():
        for s in stages_of(name):
            use = s.gpu_use()
            if use is not None and use.memory_fraction is not None:
                assert use.memory_fraction <= min(1.0, s.resources.gpus / use.devices), (name, s.name)


def test_custom_resources_no_node_offers():
    stages = variant(stages_of("demo"), "audio.decode", resources=Resources(cpus=0.25, custom={"granary_cpu_node": 1}))
    msg = refusal(stages, [{"CPU": 4}])
    assert "stage audio.decode needs granary_cpu_node=1" in msg and "ray start --resources" in msg, msg
    capacity.check(stages, [{"CPU": 4, "granary_cpu_node": 1000}], ray_executor.COMMIT_CPUS)
