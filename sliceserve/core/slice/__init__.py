"""SLICE's parts (arXiv 2510.18544): selection (phase 1), the decode mask (phase 2), feedback."""
