"""Demo data that behaves like the real problem: one abdominal phantom anatomy per case, rendered as
CT, MR T1 or MR T2, written as a Medical Segmentation Decathlon style dataset folder. A
PhantomGeometry scans the same body like another hospital's scanner would (orientation, spacing, field
of view, NIfTI or DICOM).

A model trained on one modality without augmentation fails on the others (the tissue contrast order
differs), while organ shapes and edges carry over, which intensity augmentation such as GIN exploits.
"""

from segmentation.synth.anatomy import LABELS, Anatomy, Tissue, sample_anatomy
from segmentation.synth.appearance import SYNTH_MODALITIES, render
from segmentation.synth.dataset import generate_dataset, phantom_case, phantom_depth
from segmentation.synth.scan import FILE_FORMATS, PhantomGeometry

__all__ = [
    "FILE_FORMATS", "LABELS", "SYNTH_MODALITIES", "Anatomy", "PhantomGeometry", "Tissue", "generate_dataset",
    "phantom_case", "phantom_depth", "render", "sample_anatomy",
]
