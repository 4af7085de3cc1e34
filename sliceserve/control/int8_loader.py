"""Moved to sliceserve.model.quant.int8_loader (weight representations live on the model side); this name
stays so existing imports keep working."""
from sliceserve.model.quant.int8_loader import (  # noqa: F401
    Int8Embedding, Int8Head, Int8Table, _tie_int8, fp32_bytes, is_int8, load_int8, release_freed_heap, tensor_index)
