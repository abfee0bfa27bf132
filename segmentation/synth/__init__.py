"""Demo data that behaves like the real problem: one abdominal phantom anatomy, rendered as CT, MR T1
or MR T2, written as a Medical Segmentation Decathlon style dataset folder."""
