"""Encrypted aggregation: what it costs in bytes and time, against plaintext and NVFlare's defaults.

Part 1, for the demo 2D U-Net and a ~5M-parameter 3D U-Net, two sites: upload bytes per site with HE
against plaintext float32, the sites' encrypt time, the server's aggregate time (checking and adding
ciphertexts, as the strategy does), the sites' decrypt time, and the largest difference from plaintext
FedAvg; for FedSeg's CKKS parameters and, in the same run, NVFlare's defaults (N=8192, coeff
[60, 40, 40], scale 2^40, public-key encryption as NVFlare does) as the reference row. Part 2: the
time of a demo round with HE and without, alternating: the default server.toml model, two in-process
sites with phantom CT, one local epoch; the second round of each run is timed, as it is the first in
which the sites decrypt. The in-process sites run one after the other, so their encryption adds up
where real sites would encrypt in parallel. Wall time is the target's measure; this process's CPU
time is reported too, since other work on a shared machine makes wall times noisy. Targets: HE upload
<= 8.0x plaintext, HE round <= 1.15x plaintext. Last line: a JSON object.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.logger import LOGGER_NAME
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.task_identity import TaskIdentity

from federation import client_app
from federation.config import load_server_config
from federation.he.aggregation import decrypt_average, encrypt_weighted
from federation.he.context import (
    DEFAULT_PARAMETERS,
    NVFLARE_PARAMETERS,
    CkksParameters,
    create_context,
    write_he_keys,
)
from federation.he.packing import Layout
from federation.he.records import FINGERPRINT_KEY, EncryptedAggregation, from_arrays, to_array_record
from federation.server_run import run_server
from federation.task import SiteSettings
from federation.validation import ValidationLimits
from segmentation.case_cache import CACHE_DIR_ENVIRONMENT
from segmentation.settings import NetworkConfig
from segmentation.synth import generate_dataset
from segmentation.synth.anatomy import LABELS

UPLOAD_TARGET = 8.0
ROUND_TARGET = 1.15
SITE_EXAMPLES = (384, 256)
ROUND_REPEATS = 2
NETWORKS = {
    "demo 2D U-Net": NetworkConfig(out_channels=5),
    "3D U-Net": NetworkConfig(spatial_dims=3, out_channels=5, channels=(48, 96, 192, 384)),
}
PARAMETERS = {"fedseg": DEFAULT_PARAMETERS, "nvflare-default": NVFLARE_PARAMETERS}


def site_models(network: NetworkConfig) -> list[dict[str, np.ndarray]]:
    """Two sites' trained weights: the seeded initial model moved by a small site-specific step each."""
    torch.manual_seed(0)
    start = {name: tensor.numpy() for name, tensor in network.build().state_dict().items()}
    return [{name: (value + np.random.default_rng(seed).normal(0, 0.01, value.shape)).astype(value.dtype)
             for name, value in start.items()} for seed in range(len(SITE_EXAMPLES))]


def seconds(function, *arguments):
    started = time.perf_counter()
    result = function(*arguments)
    return result, time.perf_counter() - started


def aggregation_row(models: list[dict[str, np.ndarray]], parameters: CkksParameters) -> dict:
    """Encrypt both sites' updates, aggregate them as the server does, decrypt, compare with FedAvg."""
    secret = create_context(parameters)
    server = EncryptedAggregation(secret.public(), Layout.of(models[0]).size)
    layout = Layout.of(models[0])
    replies, encrypt_s = [], []
    for model, examples in zip(models, SITE_EXAMPLES, strict=True):
        encrypted, elapsed = seconds(encrypt_weighted, secret, layout.flatten(model), examples)
        encrypt_s.append(elapsed)
        site = ConfigRecord({"site-name": "bench", FINGERPRINT_KEY: secret.fingerprint})
        replies.append(RecordDict({"arrays": to_array_record(encrypted),
                                   "metrics": MetricRecord({"num-examples": examples}), "site": site}))
    upload = encrypted.nbytes

    def aggregate() -> RecordDict:
        verdicts = server.judge(replies, ValidationLimits(), "num-examples")
        assert all(verdict.accepted for verdict in verdicts), verdicts
        return server.aggregate(replies)

    record, aggregate_s = seconds(aggregate)
    total = from_arrays({name: array.numpy() for name, array in record.items()})
    average, decrypt_s = seconds(decrypt_average, secret, total, layout.size)
    plain = [RecordDict({"arrays": ArrayRecord({name: Array(value) for name, value in model.items()}),
                         "metrics": MetricRecord({"num-examples": examples})})
             for model, examples in zip(models, SITE_EXAMPLES, strict=True)]
    fedavg = aggregate_arrayrecords(plain, "num-examples")
    expected = layout.flatten({name: array.numpy() for name, array in fedavg.items()})
    return {
        "poly_modulus_degree": parameters.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(parameters.coeff_mod_bit_sizes), "scale_bits": parameters.scale_bits,
        "upload_bytes_per_site": upload, "upload_ratio": round(upload / (4 * layout.size), 3),
        "encrypt_s_per_site": round(statistics.mean(encrypt_s), 3), "aggregate_s": round(aggregate_s, 3),
        "decrypt_s_per_site": round(decrypt_s, 3),
        "max_abs_error_vs_fedavg": float(np.max(np.abs(average - expected))),
    }


# -- part 2: a demo round with and without HE --------------------------------------------------------

class InProcessGrid:
    """Delivers each message to an in-process ClientApp, as the site's SuperNode would, and notes the
    wall and CPU clocks whenever the server sends (rounds start with a send)."""

    def __init__(self, sites: dict[int, Context]) -> None:
        self.sites = sites
        self.sent_at: list[tuple[float, float]] = []

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages: list[Message], timeout: float) -> list[Message]:
        self.sent_at.append((time.perf_counter(), time.process_time()))
        return [client_app.app(message, self.sites[message.metadata.dst_node_id]) for message in messages]


def demo_round(
    folder: Path, data: list[Path], secret: Path | None, public: Path | None
) -> tuple[float, float]:
    """Wall and CPU seconds of the second round of a two-round demo run with or without HE: from its
    training messages to the final evaluation's (aggregation, metrics and checkpoint included)."""
    run = folder / "run"
    labels = json.dumps([LABELS[value] for value in sorted(LABELS)])
    he = f'[he]\nenabled = true\npublic_context = "{public}"\n' if public else ""
    folder.mkdir(parents=True)
    path = folder / "server.toml"
    path.write_text(f'[server]\nrun_dir = "{run}"\n[federation]\nrounds = 2\nmin_sites = 2\n'
                    f'[model]\nlabels = {labels}\n{he}')
    contexts = {}
    for node, site in enumerate(data, start=1):
        settings = SiteSettings(f"Site {node}", "ct", site, run / f"site{node}.jsonl", secret)
        contexts[node] = Context(run_id=1, node_id=node, node_config=settings.to_node_config(),
                                 state=RecordDict(), run_config={})
    grid = InProcessGrid(contexts)
    run_server(grid, load_server_config(path), resume=False)
    (wall, cpu), (wall_end, cpu_end) = grid.sent_at[1:3]
    return wall_end - wall, cpu_end - cpu


def round_times(folder: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(wall, CPU) seconds of demo rounds without and with HE, alternating."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # what a ServerApp process has
    data = [generate_dataset(folder / f"data{seed}", "ct", 3, seed, size=96, test_fraction=0.34).root
            for seed in range(2)]
    keys = write_he_keys(folder / "keys")
    plain, encrypted = [], []
    for repeat in range(ROUND_REPEATS):
        plain.append(demo_round(folder / f"plain{repeat}", data, None, None))
        encrypted.append(demo_round(folder / f"he{repeat}", data, keys.secret_context, keys.public_context))
    return plain, encrypted


def main() -> None:
    torch.set_num_threads(2)
    logging.getLogger(LOGGER_NAME).setLevel(logging.WARNING)
    models = {}
    for name, network in NETWORKS.items():
        sites = site_models(network)
        size = Layout.of(sites[0]).size
        rows = {label: aggregation_row(sites, parameters) for label, parameters in PARAMETERS.items()}
        models[name] = {"parameters": size, "plaintext_bytes_per_site": 4 * size, "rows": rows}
        print(f"{name}: {size:,} parameters, plaintext float32 {4 * size / 1e6:.1f} MB per site")
        for label, row in rows.items():
            print(f"  {label:16s} N={row['poly_modulus_degree']} coeff {row['coeff_mod_bit_sizes']} "
                  f"scale 2^{row['scale_bits']}: upload {row['upload_bytes_per_site'] / 1e6:.1f} MB "
                  f"({row['upload_ratio']:.2f}x), encrypt {row['encrypt_s_per_site']:.2f} s, aggregate "
                  f"{row['aggregate_s']:.2f} s, decrypt {row['decrypt_s_per_site']:.2f} s, "
                  f"max |HE - FedAvg| {row['max_abs_error_vs_fedavg']:.1e}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CACHE_DIR_ENVIRONMENT] = str(Path(tmp) / "cache")
        plain, encrypted = round_times(Path(tmp))
    plain_s, he_s = (statistics.median(wall for wall, _ in times) for times in (plain, encrypted))
    plain_cpu, he_cpu = (statistics.median(cpu for _, cpu in times) for times in (plain, encrypted))
    round_ratio, cpu_ratio = he_s / plain_s, he_cpu / plain_cpu
    demo = models["demo 2D U-Net"]["rows"]["fedseg"]
    he_work_s = demo["encrypt_s_per_site"] + demo["aggregate_s"] + demo["decrypt_s_per_site"]
    parts_ratio = (plain_s + he_work_s) / plain_s
    upload_ratio = max(model["rows"]["fedseg"]["upload_ratio"] for model in models.values())
    print(f"demo round (2 sites, 1 local epoch, median of {ROUND_REPEATS}): plaintext {plain_s:.1f} s, "
          f"HE {he_s:.1f} s, ratio {round_ratio:.3f} (target <= {ROUND_TARGET}); CPU time: plaintext "
          f"{plain_cpu:.1f} s, HE {he_cpu:.1f} s, ratio {cpu_ratio:.3f}; HE work per round {he_work_s:.1f} s "
          f"(site encrypt + server aggregate + site decrypt): {parts_ratio:.3f}")
    print(f"HE upload {upload_ratio:.2f}x plaintext (target <= {UPLOAD_TARGET})")
    print(json.dumps({
        "benchmark": "he_aggregation",
        "sites": len(SITE_EXAMPLES),
        "models": models,
        "round": {"plaintext_s": round(plain_s, 2), "he_s": round(he_s, 2), "ratio": round(round_ratio, 3),
                  "plaintext_cpu_s": round(plain_cpu, 2), "he_cpu_s": round(he_cpu, 2),
                  "cpu_ratio": round(cpu_ratio, 3), "walls_plaintext_s": [round(w, 2) for w, _ in plain],
                  "walls_he_s": [round(w, 2) for w, _ in encrypted],
                  "he_work_s": round(he_work_s, 2), "ratio_from_parts": round(parts_ratio, 3),
                  "target_ratio": ROUND_TARGET, "met": round_ratio <= ROUND_TARGET},
        "upload": {"ratio": upload_ratio, "target_ratio": UPLOAD_TARGET,
                   "met": upload_ratio <= UPLOAD_TARGET},
        "met": round_ratio <= ROUND_TARGET and upload_ratio <= UPLOAD_TARGET,
    }))


if __name__ == "__main__":
    main()
