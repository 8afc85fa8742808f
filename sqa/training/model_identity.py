"""What a pseudo-labeling job remembers about its models (``job.json``), and how an older record
is upgraded: a checkpoint by its architecture, config and tensors (never the file's bytes, which
also hold the versions of the code that wrote it), a module by its class and weights, a callable
by its qualified name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping


def model_identity(model: Any) -> dict[str, str]:
    """What a job remembers about a model: a checkpoint's architecture, config and weights (not
    the file's bytes, which also hold the versions of the code that wrote it), a module's class +
    weights, or a callable's qualified name (its internals are not hashed). A module and its
    checkpoint file are different identities."""
    import torch

    if isinstance(model, (str, Path)):
        from sqa.models import checkpoint

        info = checkpoint.read_info(model)
        digest = hashlib.sha256(json.dumps(info.config, sort_keys=True).encode())
        _hash_tensors(digest, dict(sorted(checkpoint.read_tensors(model).items())))
        return {"kind": "checkpoint", "arch": info.arch, "content_sha256": digest.hexdigest()}
    if isinstance(model, torch.nn.Module):
        digest = hashlib.sha256()
        _hash_tensors(digest, model.state_dict())
        return {"kind": "module", "class": qualname(type(model)), "sha256": digest.hexdigest()}
    return {"kind": "callable", "name": qualname(model)}


def _hash_tensors(digest, tensors: Mapping[str, Any]) -> None:
    import torch

    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def upgrade_file_hashes(have: dict, models: list, want: dict) -> bool:
    """Jobs written before checkpoints were identified by content hold the file's SHA-256; where
    the file is still that file, its record becomes the content identity (True if any did)."""
    from sqa.export import sha256

    records = have.get("models")
    if not isinstance(records, list) or len(records) != len(models):
        return False
    changed = False
    for i, (record, model) in enumerate(zip(records, models)):
        if (isinstance(record, dict) and record.get("kind") == "checkpoint" and "sha256" in record
                and isinstance(model, (str, Path)) and record["sha256"] == sha256(model)):
            records[i], changed = want["models"][i], True
    return changed
