"""ONNX Runtime session settings for serving, shared by the handler and the batch CLI."""

from __future__ import annotations

import onnxruntime as ort

from core.settings import thread_count


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """CPU serving settings: ``intra_op_threads`` threads (0 = every core, as everywhere), no
    busy-waiting threads (workers share the cores), all graph optimizations, and the
    memory-pattern planner off since every image size differs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = thread_count(intra_op_threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False
    return options


def providers(gpu_id) -> list:
    """CUDA on the worker's GPU when TorchServe assigned one and the runtime has CUDA."""
    if gpu_id is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": int(gpu_id)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
