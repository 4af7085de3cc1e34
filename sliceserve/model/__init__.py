"""The real engine's model side: a Llama-family decoder over a paged KV cache, weight loading, sampling."""
