"""Weight representations of the torch engine: the one seam where the CPU's fast form is chosen
(representation.py) and where a memory target streams weights straight into int8 (int8_loader.py)."""
from sliceserve.model.quant.representation import (  # noqa: F401
    DTYPE_CHOICES, INT8_DYNAMIC, Representation, apply_representation, quantize_int8_dynamic, resolve)
