"""Homomorphically encrypted aggregation (CKKS via TenSEAL): the server adds what it cannot read.

context: parameters, key files and fingerprints. packing: a model's arrays as one flat vector.
aggregation: the site's check, pre-weighting and encryption, the server's ciphertext sum, the sites'
decryption. records: the encrypted sums in Flower records and the server's checks on them.
checkpoint: the server's encrypted global model on disk. Security notes: docs/security.md.
"""
