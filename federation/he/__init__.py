"""Masked, homomorphically encrypted aggregation (BFV via SEAL's binding in TenSEAL): the server adds what
it cannot read, and no site can read another's update either.

context: parameters, key files and fingerprints. packing: a model's arrays as one flat vector.
aggregation: the site's check, weighting, fixed-point code and encryption, the server's ciphertext sum,
the sites' decryption. masking: pairwise masks (key agreement, seeds, expansion). roster: who masks with
whom, and a site's rules for it. site and secure_round: the two sides of a round's protocol. records: the
encrypted sums in Flower records. checkpoint: the server's encrypted global model on disk. Security
notes: docs/security.md.
"""
