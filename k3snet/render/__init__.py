"""Renderers: plans and states as text, JSON and persistence files (k3snet.nft ...)."""
