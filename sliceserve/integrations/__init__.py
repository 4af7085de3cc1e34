"""Integrations with existing systems (optional extras): `sliceserve.integrations.ray` scales out on Ray Serve."""
