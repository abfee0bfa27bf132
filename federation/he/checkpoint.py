"""The server's global model with HE on: stored as the server holds it, encrypted.

model.he is an .npz archive (read without pickle, so a file from elsewhere cannot run code) of the
global model's arrays (the encrypted sum of the last round, or the public initial weights before any
round succeeded) and a JSON header: format, round, the key's fingerprint and the model settings and plan a
resumed run must keep. It is written atomically. Only the sites' secret context can decrypt it.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmentation.atomic import atomic_open
from segmentation.errors import CheckpointError, ConfigError
from segmentation.plan import Plan
from segmentation.settings import NetworkConfig

ENCRYPTED_CHECKPOINT_NAME = "model.he"
FORMAT = "fedseg-encrypted-model/3"
# /1 held one array per ciphertext (records.py's earlier layout); /2 squeezed every slice to one image size
# and carries no plan. Neither can be resumed.
_EARLIER_FORMATS = ("fedseg-encrypted-model/1", "fedseg-encrypted-model/2")
_HEADER = "header"
_ARRAY_PREFIX = "arrays/"


@dataclass
class EncryptedCheckpoint:
    """An encrypted global model after `round` rounds, with the settings, plan and key it belongs to."""

    network: NetworkConfig
    plan: Plan
    augmentation: str
    round: int
    fingerprint: str
    arrays: dict[str, np.ndarray]

    @property
    def labels(self) -> dict[int, str]:
        return self.plan.labels


def save_encrypted_checkpoint(checkpoint: EncryptedCheckpoint, path: str | Path) -> None:
    header = json.dumps({
        "format": FORMAT, "round": checkpoint.round, "fingerprint": checkpoint.fingerprint,
        "network": checkpoint.network.to_dict(), "plan": checkpoint.plan.to_dict(),
        "augmentation": checkpoint.augmentation, "names": list(checkpoint.arrays),
    })
    members = {f"{_ARRAY_PREFIX}{index}": np.asarray(array)
               for index, array in enumerate(checkpoint.arrays.values())}
    with atomic_open(path, "wb") as stream:
        np.savez(stream, **{_HEADER: np.array(header)}, **members)


def load_encrypted_checkpoint(path: str | Path) -> EncryptedCheckpoint:
    """CheckpointError when the file is missing, damaged or not an encrypted FedSeg model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such encrypted model file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive[_HEADER]))
            found = header.get("format") if isinstance(header, dict) else None
            if found in _EARLIER_FORMATS:
                raise CheckpointError(f"{path} was made by an earlier version (format {found}) and cannot be "
                                      "resumed; start the run again in another [server] run_dir")
            if found != FORMAT:
                raise CheckpointError(f"{path}: not an encrypted FedSeg model of this version (format "
                                      f"{found!r}, expected {FORMAT!r})")
            arrays = {name: archive[f"{_ARRAY_PREFIX}{index}"] for index, name in enumerate(header["names"])}
            return EncryptedCheckpoint(
                network=NetworkConfig.from_dict(header["network"]), plan=Plan.from_dict(header["plan"]),
                augmentation=str(header["augmentation"]), round=int(header["round"]),
                fingerprint=str(header["fingerprint"]), arrays=arrays,
            )
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, ConfigError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path}: not a readable encrypted model ({type(error).__name__})") from None
