"""Encrypted aggregation: what it costs in bytes, time and precision, before and after the move to BFV.

Part 1, for the demo 2D U-Net and a ~5M-parameter 3D U-Net, with SITES (20) sites each: three rows side by
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

Part 2 (skipped with --part1-only): the time of a demo round with HE and without, alternating: the default
server.toml model, two in-process sites with phantom CT, one local epoch; the second round of each run is
timed, as it is the first in which the sites decrypt. The in-process sites run one after the other, so their
encryption adds up where real sites would encrypt in parallel. Wall time is the target's measure; this
process's CPU time is reported too, since other work on a shared machine makes wall times noisy.

Targets (fedseg row): upload <= 1.6x float32, download <= 3.1x, max |HE - FedAvg| <= 1e-6 with 20 sites,
HE round <= 1.15x plaintext. Last line: a JSON object ("upload_ratio" and "download_ratio" are the fedseg
row's largest over the models).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tenseal as ts
import tenseal.sealapi as seal
import torch

from federation.he.aggregation import add_encrypted, decrypt_average, encrypt_share
from federation.he.context import DEFAULT_PARAMETERS, HeContext, create_context
from federation.he.masking import MaskKeyPair, pairwise_mask, round_context
from federation.he.packing import Layout, chunks
from segmentation.settings import NetworkConfig

if TYPE_CHECKING:
    from flwr.app import Context, Message

    from federation.task import SiteSettings

SITES = 20
UPLOAD_TARGET = 1.6
DOWNLOAD_TARGET = 3.1
ERROR_TARGET = 1e-6
ROUND_TARGET = 1.15
ROUND_REPEATS = 2
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


def part1(sites: int) -> dict[str, dict[str, Any]]:
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


# -- part 2: a demo round with and without HE ------------------------------------------------------------
# The federation modules are imported inside the functions, so that part 1 runs (--part1-only) while the
# server and site code change around it.

class InProcessGrid:
    """Delivers each message to an in-process ClientApp, as the site's SuperNode would, and notes the
    wall and CPU clocks whenever the server sends (rounds start with a send)."""

    def __init__(self, sites: dict[int, Context]) -> None:
        self.sites = sites
        self.sent_at: list[tuple[float, float]] = []

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages: list[Message], timeout: float) -> list[Message]:
        from federation import client_app

        self.sent_at.append((time.perf_counter(), time.process_time()))
        return [client_app.app(message, self.sites[message.metadata.dst_node_id]) for message in messages]


def demo_site_settings(node: int, data: Path, run: Path, secret: Path | None) -> SiteSettings:
    """The settings of in-process site `node` of a demo round: its phantom data, its event file and, with
    HE, the sites' secret context; two sites mask with each other (min_mask_sites 2)."""
    from federation.he.roster import MaskingSettings
    from federation.task import SiteSettings

    return SiteSettings(f"Site {node}", "ct", data, run / f"site{node}.jsonl", secret,
                        masking=MaskingSettings(min_sites=2))


def demo_round(
    folder: Path, data: list[Path], secret: Path | None, public: Path | None
) -> tuple[float, float]:
    """Wall and CPU seconds of the second round of a two-round demo run with or without HE: from its
    training messages to the final evaluation's (aggregation, metrics and checkpoint included)."""
    from flwr.app import Context, RecordDict

    from federation.config import load_server_config
    from federation.server_run import run_server
    from segmentation.synth.anatomy import LABELS

    run = folder / "run"
    labels = json.dumps([LABELS[value] for value in sorted(LABELS)])
    he = f'[he]\nenabled = true\npublic_context = "{public}"\n' if public else ""
    folder.mkdir(parents=True)
    path = folder / "server.toml"
    path.write_text(f'[server]\nrun_dir = "{run}"\n[federation]\nrounds = 2\nmin_sites = 2\n'
                    f'[model]\nlabels = {labels}\n{he}')
    contexts = {}
    for node, site in enumerate(data, start=1):
        settings = demo_site_settings(node, site, run, secret)
        contexts[node] = Context(run_id=1, node_id=node, node_config=settings.to_node_config(),
                                 state=RecordDict(), run_config={})
    grid = InProcessGrid(contexts)
    run_server(grid, load_server_config(path), resume=False)
    (wall, cpu), (wall_end, cpu_end) = grid.sent_at[1:3]
    return wall_end - wall, cpu_end - cpu


def round_times(folder: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(wall, CPU) seconds of demo rounds without and with HE, alternating."""
    from flwr.supercore.task_identity import TaskIdentity

    from federation.he.context import write_he_keys
    from segmentation.synth import generate_dataset

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # what a ServerApp process has
    data = [generate_dataset(folder / f"data{seed}", "ct", 3, seed, size=96, test_fraction=0.34).root
            for seed in range(2)]
    keys = write_he_keys(folder / "keys")
    plain, encrypted = [], []
    for repeat in range(ROUND_REPEATS):
        plain.append(demo_round(folder / f"plain{repeat}", data, None, None))
        encrypted.append(demo_round(folder / f"he{repeat}", data, keys.secret_context, keys.public_context))
    return plain, encrypted


def part2(demo: dict[str, Any]) -> dict[str, Any]:
    """The demo round's times; `demo` is part 1's fedseg row of the demo network."""
    from flwr.common.logger import LOGGER_NAME

    from segmentation.case_cache import CACHE_DIR_ENVIRONMENT

    logging.getLogger(LOGGER_NAME).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CACHE_DIR_ENVIRONMENT] = str(Path(tmp) / "cache")
        plain, encrypted = round_times(Path(tmp))
    plain_s, he_s = (statistics.median(wall for wall, _ in times) for times in (plain, encrypted))
    plain_cpu, he_cpu = (statistics.median(cpu for _, cpu in times) for times in (plain, encrypted))
    round_ratio, cpu_ratio = he_s / plain_s, he_cpu / plain_cpu
    he_work_s = demo["encrypt_s_per_site"] + demo["aggregate_s"] + demo["decrypt_s_per_site"]
    parts_ratio = (plain_s + he_work_s) / plain_s
    print(f"demo round (2 sites, 1 local epoch, median of {ROUND_REPEATS}): plaintext {plain_s:.1f} s, "
          f"HE {he_s:.1f} s, ratio {round_ratio:.3f} (target <= {ROUND_TARGET}); CPU time: plaintext "
          f"{plain_cpu:.1f} s, HE {he_cpu:.1f} s, ratio {cpu_ratio:.3f}; HE work per round in part 1 "
          f"({SITES} sites) {he_work_s:.1f} s (site encrypt + server aggregate + site decrypt): "
          f"{parts_ratio:.3f}")
    return {"plaintext_s": round(plain_s, 2), "he_s": round(he_s, 2), "ratio": round(round_ratio, 3),
            "plaintext_cpu_s": round(plain_cpu, 2), "he_cpu_s": round(he_cpu, 2),
            "cpu_ratio": round(cpu_ratio, 3), "walls_plaintext_s": [round(w, 2) for w, _ in plain],
            "walls_he_s": [round(w, 2) for w, _ in encrypted],
            "he_work_s": round(he_work_s, 2), "ratio_from_parts": round(parts_ratio, 3),
            "target_ratio": ROUND_TARGET, "met": round_ratio <= ROUND_TARGET}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part1-only", action="store_true", help="skip part 2, the demo rounds")
    parser.add_argument("--sites", type=int, default=SITES, help=f"sites in part 1 (default {SITES})")
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    models = part1(arguments.sites)
    fedseg = [model["rows"]["fedseg"] for model in models.values()]
    upload_ratio = max(row["upload_ratio"] for row in fedseg)
    download_ratio = max(row["download_ratio"] for row in fedseg)
    error = max(row["max_abs_error_vs_fedavg"] for row in fedseg)
    met = {"upload": upload_ratio <= UPLOAD_TARGET, "download": download_ratio <= DOWNLOAD_TARGET,
           "error": error <= ERROR_TARGET}
    print(f"fedseg: upload {upload_ratio:.2f}x float32 (target <= {UPLOAD_TARGET}), download "
          f"{download_ratio:.2f}x (target <= {DOWNLOAD_TARGET}), max |HE - FedAvg| {error:.1e} with "
          f"{arguments.sites} sites (target <= {ERROR_TARGET:g})")
    demo_round_figures = None
    if arguments.part1_only:
        print(f"demo round: skipped (--part1-only; target <= {ROUND_TARGET}x plaintext)")
    else:
        demo_round_figures = part2(models["demo 2D U-Net"]["rows"]["fedseg"])
        met["round"] = demo_round_figures["met"]
    print(json.dumps({
        "benchmark": "he_aggregation",
        "sites": arguments.sites,
        "models": models,
        "round": demo_round_figures,
        "upload_ratio": upload_ratio, "download_ratio": download_ratio, "max_abs_error": error,
        "targets": {"upload_ratio": UPLOAD_TARGET, "download_ratio": DOWNLOAD_TARGET,
                    "max_abs_error": ERROR_TARGET, "round_ratio": ROUND_TARGET},
        "targets_met": met,
        "met": all(met.values()),
    }))


if __name__ == "__main__":
    main()
