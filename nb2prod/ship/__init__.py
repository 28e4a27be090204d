"""Shipping: the in-process parity check, the image, the container smoke test and the push."""
