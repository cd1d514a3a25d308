"""What a record's numbers were measured on: the data (a synthetic release with its generator
seed and scale, or a real release with its label file's digest) and the CLIP backbone (random init,
as the tiny default, or a weights file with its digest). Every record carries both, so the page
can say — in a banner when it applies — that a number is not comparable with published ones."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def _sha256(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime)


def data_provenance(cache_path) -> dict:
    """From a dataset cache's ``meta.json``: synthetic (the generator's ``truth/spec.json`` next to
    the release) or a real release (its label file and digest), with the data fingerprint and the
    reader options that differ from the defaults. Several caches (a cross-dataset evaluation, in
    its release order): each release's under ``parts``, the kind they share (``mixed`` otherwise)
    and the evaluation's fingerprint (``suite.evaluation.combined_fingerprint``)."""
    from .data.options import ReaderOptions

    if isinstance(cache_path, (list, tuple)):
        if len(cache_path) == 1:
            return data_provenance(cache_path[0])
        from .evaluation import combined_fingerprint

        parts = {json.loads((Path(p) / "meta.json").read_text())["dataset"]: data_provenance(p) for p in cache_path}
        kinds = {p["kind"] for p in parts.values()}
        first = next(iter(parts.values()))
        return {"fingerprint": combined_fingerprint({r: p["fingerprint"] for r, p in parts.items()}),
                "root": "; ".join(p["root"] for p in parts.values()), "label_file": "; ".join(p["label_file"] for p in parts.values()),
                "kind": kinds.pop() if len(kinds) == 1 else "mixed", "parts": parts,
                **({"seed": first["seed"], "scale": first["scale"]} if first["kind"] == "synthetic" else {})}

    meta = json.loads((Path(cache_path) / "meta.json").read_text())
    root, sheet = Path(meta["root"]), Path(meta["sheet"])
    out = {"fingerprint": meta["fingerprint"], "root": str(root), "label_file": sheet.name}
    reading = ReaderOptions.from_release_options(meta.get("options", {})).non_default()
    if reading:  # labels read under other rules than the defaults (e.g. alternatives=union): the page says so
        out["reading"] = reading
    spec_file = root.parent / "truth" / "spec.json"
    if spec_file.exists():
        spec = json.loads(spec_file.read_text())
        return {**out, "kind": "synthetic", "seed": spec["seed"], "scale": spec.get("scale", "custom")}
    return {**out, "kind": "release", "label_sha256": file_sha256(sheet) if sheet.exists() else None}


def backbone_provenance(hparams: dict) -> dict:
    """The CLIP tower a configuration uses: none, an open_clip architecture without weights (random
    init: e.g. the ``tiny`` default), or a weights file (with its digest) or tag."""
    hp = next(iter(hparams["per_fold"].values())) if "per_fold" in hparams else hparams
    if "clip_model" not in hp:
        return {"kind": "none", "label": "no CLIP backbone"}
    name, weights = hp["clip_model"], hp.get("pretrained")
    if not weights:
        return {"kind": "random-init", "clip_model": name, "label": f"{name}, random init (no weights)"}
    path = Path(str(weights)).expanduser()
    if path.exists():
        return {"kind": "weights", "clip_model": name, "weights": str(path), "weights_sha256": file_sha256(path),
                "label": f"{name}, weights {path.name}"}
    return {"kind": "weights", "clip_model": name, "weights": str(weights), "label": f"{name}, open_clip weights '{weights}'"}


def not_comparable(record: dict) -> list[str]:
    """Why a record's numbers cannot be set beside published ones (empty: nothing known against it)."""
    why = []
    data = record.get("data") or {}
    if data.get("kind") == "synthetic" or any(p.get("kind") == "synthetic" for p in data.get("parts", {}).values()) \
            or str(record.get("data_root", "")).startswith("synthetic"):
        why.append("synthetic data")
    if record.get("backbone", {}).get("kind") == "random-init":
        why.append("a random-init CLIP backbone")
    return why
