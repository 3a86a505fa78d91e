"""Renderers: plans and states as text, JSON and persistence files (nftables.conf ...)."""
