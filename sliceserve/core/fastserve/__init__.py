"""Parts of the FastServe policy (sliceserve.core.policies.fastserve)."""
