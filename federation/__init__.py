"""Flower federation built on the segmentation engine (never imports app)."""
