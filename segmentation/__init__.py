"""Segmentation engine: study I/O, demo data, augmentation, training and inference (MONAI/torch).

Never imports flwr or app: the federation and the workbench build on it, not the other way round.
"""
