"""Study I/O: DICOM series, NIfTI, NRRD, Slicer segmentations and MetaImage files as one Volume type;
label maps from those and from DICOM-SEG files.

Bad input raises a typed StudyReadError (or another FedSegError) with a one-line message.
"""

from segmentation.io.readers import read_label_map, read_labeled_pair, read_volume
from segmentation.io.writers import write_volume

__all__ = ["read_label_map", "read_labeled_pair", "read_volume", "write_volume"]
