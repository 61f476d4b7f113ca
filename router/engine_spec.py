"""The engine's configuration from the router's settings (the engine never reads them)."""

from __future__ import annotations

from lora_router.adapters.factory import EngineSpec
from lora_router.adapters.peft_engine import EngineConfig
from lora_router.adapters.remote import RemoteConfig
from lora_router.adapters.vllm_support import VllmConfig
from lora_router.router.settings import Settings


def engine_spec(settings: Settings) -> EngineSpec:
    """The :class:`EngineSpec` that ``settings`` ask for."""
    return EngineSpec(
        kind=settings.engine,
        config=EngineConfig(
            max_batch_size=settings.max_batch_size,
            batch_wait_ms=settings.batch_wait_ms,
            max_lora_rank=settings.max_lora_rank,
            max_adapters=settings.max_adapters,
            max_queue=settings.max_queue,
            request_timeout_s=settings.request_timeout_s,
            device=settings.device,
            dtype=settings.dtype,
            torch_threads=settings.torch_threads,
            cuda_graphs=settings.cuda_graphs,
            static_max_len=settings.static_max_len,
        ),
        remote=remote_config(settings),
        vllm=vllm_config(settings) if settings.engine == "vllm" else None,
    )


def vllm_config(settings: Settings) -> VllmConfig:
    """The in-process vLLM engine's knobs (``engine=vllm``); ``ConfigError`` on values vLLM
    would refuse or misuse (checked here, at start, in one line)."""
    return VllmConfig(
        max_adapters=settings.max_adapters,
        max_loras=settings.vllm_max_loras,
        max_lora_rank=settings.max_lora_rank,
        max_cpu_loras=settings.vllm_max_cpu_loras,
        gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
        max_model_len=settings.vllm_max_model_len,
        max_num_seqs=settings.max_batch_size,
        max_queue=settings.max_queue,
        request_timeout_s=settings.request_timeout_s,
        dtype="bfloat16" if settings.dtype == "auto" else settings.dtype,
        enforce_eager=settings.vllm_enforce_eager,
    )


def remote_config(settings: Settings) -> RemoteConfig:
    """The remote engine's knobs (``engine=remote``)."""
    key = settings.engine_api_key
    return RemoteConfig(
        backends=settings.engine_backends,
        request_timeout_s=settings.request_timeout_s,
        load_timeout_s=settings.engine_load_timeout_s,
        connect_timeout_s=settings.engine_connect_timeout_s,
        probe_interval_s=settings.engine_probe_interval_s,
        probe_timeout_s=settings.engine_probe_timeout_s,
        start_timeout_s=settings.engine_start_timeout_s,
        api_key=key.get_secret_value() if key is not None else None,
        adapters_root=settings.engine_adapters_root,
        max_adapters=settings.max_adapters,
        max_inflight=settings.max_batch_size,
    )
