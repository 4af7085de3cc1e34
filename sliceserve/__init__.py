"""sliceserve: SLO-driven LLM serving for edge devices."""
