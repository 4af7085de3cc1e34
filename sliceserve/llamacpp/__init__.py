"""The llama.cpp backend (optional extra `sliceserve[llamacpp]`): the same scheduler on the engine edge devices
already run. Nothing here is imported by core code; `llama_cpp` is imported only when this backend is chosen."""
