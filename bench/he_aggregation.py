"""Encrypted aggregation: what it costs in bytes, time and precision, before and after the move to BFV.

For the demo 2D U-Net and a ~5M-parameter 3D U-Net, with SITES (20) sites each: three rows side by
side, in one run.
  ckks-before      FedSeg's previous setting, rebuilt here with TenSEAL directly since the product no
                   longer has it: CKKS N=4096, coeff [56, 20], scale 2^33, symmetric (secret-key)
                   encryption, each site sends n_k * w_k as CKKSVectors of 2048 values, serialize()d; the
                   server (a context without the secret key) adds them with CKKSVector.add_; the sites
                   decrypt and divide by sum n_k.
  nvflare-default  NVFlare's defaults, the same way: CKKS N=8192, coeff [60, 40, 40], scale 2^40, public-key
                   encryption, CKKSVectors of 4096 values.
  fedseg           the product's path, federation.he.aggregation: seeded secret-key BFV (DEFAULT_PARAMETERS),
                   each site agrees a seed with every other (X25519, HKDF), expands its pairwise mask
                   (ChaCha20, timed apart as mask_s_per_site) and sends encrypt_share(context, w_k, n_k, N,
                   mask) with N the sites' total examples; the server adds with add_encrypted on the public
                   context, the masks cancel; the sites decrypt_average.
Per row: upload bytes per site and their ratio to float32 (4 bytes a value), download bytes (the server's
sum) and ratio, a site's encrypt time (mean over the sites), the server's aggregate time (loading, checking
and adding every site's ciphertexts, then serializing the sum), a site's decrypt time, and the largest
|HE - FedAvg| against NumPy's float64 weighted mean of the 20 site models. The CKKS rows fold each upload
into the running sum as it arrives (keeping 20 CKKS uploads of the 3D U-Net would take ~6 GB); the fedseg
row hands all 20 uploads to add_encrypted at once, as the server does. Each row states the coefficient bits
against SEAL's 128-bit maximum for its N; the fedseg context is made at SEC_LEVEL_TYPE.TC128, so SEAL
refuses parameters below 128-bit security.

A round's wall time with HE against without, through real Flower processes, is bench/he_round_time.py's.

Targets (fedseg row): upload <= 1.6x float32, download <= 3.1x, max |HE - FedAvg| <= 1e-6 with 20 sites.
Last line: a JSON object ("upload_ratio" and "download_ratio" are the fedseg row's largest over the
models).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal as ts
import tenseal.sealapi as seal
import torch

from federation.he.aggregation import add_encrypted, decrypt_average, encrypt_share
from federation.he.context import DEFAULT_PARAMETERS, HeContext, create_context
from federation.he.masking import MaskKeyPair, pairwise_mask, round_context
from federation.he.packing import Layout, chunks
from segmentation.settings import NetworkConfig

SITES = 20
UPLOAD_TARGET = 1.6
DOWNLOAD_TARGET = 3.1
ERROR_TARGET = 1e-6
NETWORKS = {
    "demo 2D U-Net": NetworkConfig(out_channels=5),
    "3D U-Net": NetworkConfig(spatial_dims=3, out_channels=5, channels=(48, 96, 192, 384)),
}


def site_examples(sites: int = SITES) -> list[int]:
    """Unequal example counts, 64 to 511, so that the weights of the mean differ."""
    return [64 + (97 * site + 128) % 448 for site in range(sites)]


def site_models(network: NetworkConfig, sites: int = SITES) -> list[dict[str, np.ndarray]]:
    """The sites' trained weights: the seeded initial model moved by a small step of seed k for site k."""
    torch.manual_seed(0)
    start = {name: tensor.numpy() for name, tensor in network.build().state_dict().items()}
    models = []
    for seed in range(sites):
        rng = np.random.default_rng(seed)
        models.append({name: (value + rng.normal(0, 0.01, value.shape)).astype(value.dtype)
                       for name, value in start.items()})
    return models


def seconds(function, *arguments):
    started = time.perf_counter()
    result = function(*arguments)
    return result, time.perf_counter() - started


def fedavg(layout: Layout, models: list[dict[str, np.ndarray]], examples: list[int]) -> np.ndarray:
    """NumPy's float64 weighted mean sum_k n_k w_k / sum_k n_k, a site at a time (the stack of 20 3D
    models would take ~1 GB)."""
    total = np.zeros(layout.size)
    for model, count in zip(models, examples, strict=True):
        total += count * layout.flatten(model)
    return total / sum(examples)


# -- the two CKKS reference rows, with TenSEAL directly --------------------------------------------------

@dataclass(frozen=True)
class CkksSetting:
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    symmetric: bool
    values_per_vector: int

    def describe(self) -> str:
        kind = "symmetric" if self.symmetric else "public-key"
        maximum = seal.CoeffModulus.MaxBitCount(self.poly_modulus_degree, seal.SEC_LEVEL_TYPE.TC128)
        return (f"CKKS N={self.poly_modulus_degree} coeff {list(self.coeff_mod_bit_sizes)} "
                f"({sum(self.coeff_mod_bit_sizes)} of SEAL's 128-bit max {maximum} bits) scale "
                f"2^{self.scale_bits}, {kind}, {self.values_per_vector} values per CKKSVector")


CKKS_BEFORE = CkksSetting(4096, (56, 20), 33, True, 2048)
NVFLARE_DEFAULT = CkksSetting(8192, (60, 40, 40), 40, False, 4096)
CKKS_SETTINGS = {"ckks-before": CKKS_BEFORE, "nvflare-default": NVFLARE_DEFAULT}
ROWS = (*CKKS_SETTINGS, "fedseg")


def ckks_contexts(setting: CkksSetting) -> tuple[ts.Context, ts.Context]:
    """The sites' context (with the secret key) and the server's (the same without it)."""
    encryption = ts.ENCRYPTION_TYPE.SYMMETRIC if setting.symmetric else ts.ENCRYPTION_TYPE.ASYMMETRIC
    secret = ts.context(ts.SCHEME_TYPE.CKKS, setting.poly_modulus_degree,
                        coeff_mod_bit_sizes=list(setting.coeff_mod_bit_sizes), encryption_type=encryption)
    secret.global_scale = 2.0 ** setting.scale_bits
    server = ts.context_from(secret.serialize(save_secret_key=False))
    return secret, server


def ckks_encrypt(context: ts.Context, setting: CkksSetting, vector: np.ndarray, examples: int) -> list[bytes]:
    """A site's upload: n_k * w_k, pre-weighted, as serialized CKKSVectors."""
    weighted = vector * examples
    return [ts.ckks_vector(context, piece.tolist()).serialize()
            for piece in chunks(weighted, setting.values_per_vector)]


def ckks_add(server: ts.Context, running: list[ts.CKKSVector] | None,
             upload: list[bytes]) -> list[ts.CKKSVector]:
    """The server folds one site's upload into the running sum with CKKSVector.add_."""
    loaded = [ts.ckks_vector_from(server, data) for data in upload]
    if running is None:
        return loaded
    for accumulated, vector in zip(running, loaded, strict=True):
        accumulated.add_(vector)
    return running


def ckks_decrypt(context: ts.Context, download: list[bytes], weight: int) -> np.ndarray:
    """A site's global model: decrypt sum_k n_k w_k and divide by sum_k n_k."""
    pieces = [np.array(ts.ckks_vector_from(context, data).decrypt()) for data in download]
    return np.concatenate(pieces) / weight


def ckks_row(setting: CkksSetting, layout: Layout, models: list[dict[str, np.ndarray]],
             examples: list[int], expected: np.ndarray) -> dict[str, Any]:
    secret, server = ckks_contexts(setting)
    encrypt_s, aggregate_s, running, upload = [], 0.0, None, 0
    for model, count in zip(models, examples, strict=True):
        vector = layout.flatten(model)
        encrypted, elapsed = seconds(ckks_encrypt, secret, setting, vector, count)
        encrypt_s.append(elapsed)
        upload = max(upload, sum(len(data) for data in encrypted))
        running, elapsed = seconds(ckks_add, server, running, encrypted)
        aggregate_s += elapsed
    download, elapsed = seconds(lambda: [vector.serialize() for vector in running])
    aggregate_s += elapsed
    average, decrypt_s = seconds(ckks_decrypt, secret, download, sum(examples))
    return row_figures(setting.describe(), layout.size, upload, sum(len(data) for data in download),
                       encrypt_s, aggregate_s, decrypt_s, average, expected)


# -- the product's BFV row --------------------------------------------------------------------------------

def security_statement(context: HeContext) -> str:
    parameters = context.parameters
    maximum = seal.CoeffModulus.MaxBitCount(parameters.poly_modulus_degree, seal.SEC_LEVEL_TYPE.TC128)
    assert context.seal.parameters_set()
    return (f"BFV N={parameters.poly_modulus_degree}, one {parameters.coeff_modulus_bits}-bit coefficient "
            f"prime (SEAL's 128-bit max for this N: {maximum} bits), {parameters.plain_modulus_bits}-bit "
            f"plain modulus t={context.plain_modulus}, {parameters.fraction_bits} fraction bits: 128-bit "
            f"security (the context is made at SEC_LEVEL_TYPE.TC128; SEAL refuses parameters below it)")


def fedseg_row(layout: Layout, models: list[dict[str, np.ndarray]], examples: list[int],
               expected: np.ndarray) -> dict[str, Any]:
    """The product's path, pairwise masks included: each site agrees a seed with every other (X25519 +
    HKDF), expands them (ChaCha20) into its mask, and uploads encrypt_share(w_k, n_k, N, mask)."""
    secret = create_context(DEFAULT_PARAMETERS)
    server = secret.public()
    total = sum(examples)
    signing = round_context(1, 1, secret.fingerprint)
    keys = [MaskKeyPair.generate() for _ in models]
    adverts = [pair.advertise(node, signing, None) for node, pair in enumerate(keys)]
    uploads, encrypt_s, mask_s = [], [], []
    for node, (model, count) in enumerate(zip(models, examples, strict=True)):
        vector = layout.flatten(model)
        started = time.perf_counter()
        seeds = {peer.node_id: keys[node].pair_seed(node, peer, signing)
                 for peer in adverts if peer.node_id != node}
        mask = pairwise_mask(node, seeds, layout.size, secret.plain_modulus)
        mask_s.append(time.perf_counter() - started)
        encrypted, elapsed = seconds(encrypt_share, secret, vector, count, total, mask)
        encrypt_s.append(elapsed)
        uploads.append(encrypted)
    summed, aggregate_s = seconds(add_encrypted, server, uploads, layout.size)
    average, decrypt_s = seconds(decrypt_average, secret, summed, layout.size)
    row = row_figures(security_statement(secret), layout.size, max(upload.nbytes for upload in uploads),
                      summed.nbytes, encrypt_s, aggregate_s, decrypt_s, average, expected)
    row["mask_s_per_site"] = round(statistics.mean(mask_s), 3)
    parameters = DEFAULT_PARAMETERS
    row["parameters"] = {"poly_modulus_degree": parameters.poly_modulus_degree,
                         "coeff_modulus_bits": parameters.coeff_modulus_bits,
                         "plain_modulus_bits": parameters.plain_modulus_bits,
                         "fraction_bits": parameters.fraction_bits, "security_bits": 128}
    return row


def row_figures(setting: str, size: int, upload: int, download: int, encrypt_s: list[float],
                aggregate_s: float, decrypt_s: float, average: np.ndarray, expected: np.ndarray
                ) -> dict[str, Any]:
    return {
        "setting": setting,
        "upload_bytes_per_site": upload, "upload_ratio": round(upload / (4 * size), 3),
        "download_bytes": download, "download_ratio": round(download / (4 * size), 3),
        "encrypt_s_per_site": round(statistics.mean(encrypt_s), 3), "aggregate_s": round(aggregate_s, 3),
        "decrypt_s_per_site": round(decrypt_s, 3),
        "max_abs_error_vs_fedavg": float(np.max(np.abs(average - expected))),
    }


def measure(sites: int) -> dict[str, dict[str, Any]]:
    """The three rows for each network, printed as they come."""
    models = {}
    examples = site_examples(sites)
    for name, network in NETWORKS.items():
        site_weights = site_models(network, sites)
        layout = Layout.of(site_weights[0])
        expected = fedavg(layout, site_weights, examples)
        print(f"{name}: {layout.size:,} parameters, float32 {4 * layout.size / 1e6:.2f} MB per site, "
              f"{sites} sites, {sum(examples)} examples", flush=True)
        rows = {}
        for label in ROWS:
            if label == "fedseg":
                row = fedseg_row(layout, site_weights, examples, expected)
            else:
                row = ckks_row(CKKS_SETTINGS[label], layout, site_weights, examples, expected)
            rows[label] = row
            print(f"  {label:15s} upload {row['upload_bytes_per_site'] / 1e6:7.2f} MB "
                  f"({row['upload_ratio']:5.2f}x)  download {row['download_bytes'] / 1e6:7.2f} MB "
                  f"({row['download_ratio']:5.2f}x)  encrypt {row['encrypt_s_per_site']:6.2f} s/site  "
                  f"aggregate {row['aggregate_s']:6.2f} s  decrypt {row['decrypt_s_per_site']:6.2f} s  "
                  f"max |HE - FedAvg| {row['max_abs_error_vs_fedavg']:.1e}", flush=True)
            if "mask_s_per_site" in row:
                print(f"  {'':15s} pairwise masks with {sites - 1} peers: "
                      f"{row['mask_s_per_site']:.2f} s/site", flush=True)
            print(f"  {'':15s} {row['setting']}", flush=True)
        models[name] = {"parameters": layout.size, "plaintext_bytes_per_site": 4 * layout.size,
                        "sites": sites, "rows": rows}
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=SITES, help=f"sites (default {SITES})")
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    models = measure(arguments.sites)
    fedseg = [model["rows"]["fedseg"] for model in models.values()]
    upload_ratio = max(row["upload_ratio"] for row in fedseg)
    download_ratio = max(row["download_ratio"] for row in fedseg)
    error = max(row["max_abs_error_vs_fedavg"] for row in fedseg)
    met = {"upload": upload_ratio <= UPLOAD_TARGET, "download": download_ratio <= DOWNLOAD_TARGET,
           "error": error <= ERROR_TARGET}
    print(f"fedseg: upload {upload_ratio:.2f}x float32 (target <= {UPLOAD_TARGET}), download "
          f"{download_ratio:.2f}x (target <= {DOWNLOAD_TARGET}), max |HE - FedAvg| {error:.1e} with "
          f"{arguments.sites} sites (target <= {ERROR_TARGET:g})")
    print(json.dumps({
        "benchmark": "he_aggregation",
        "sites": arguments.sites,
        "models": models,
        "upload_ratio": upload_ratio, "download_ratio": download_ratio, "max_abs_error": error,
        "targets": {"upload_ratio": UPLOAD_TARGET, "download_ratio": DOWNLOAD_TARGET,
                    "max_abs_error": ERROR_TARGET},
        "targets_met": met,
        "met": all(met.values()),
    }))


if __name__ == "__main__":
    main()
