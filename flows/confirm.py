"""DVC stage `confirm`: the search's pick run at full length, and moved along the front until the
written file meets the validation target (`confirm.target_error`).

Each candidate (search/<model>/allocation.json: the pick, then the front's larger files) runs the
real prune, quantize and encode flows on a scratch root under runs/<model>/confirm/; the first
whose file's validation error is at most the target is kept, in search/<model>/confirmed.json,
which prune, quantize and encode then use. So `dvc repro` never hands back a file that misses the
target when a tried point meets it, on any machine; when none does, the lowest error is kept and
the record says so. Confirmed candidates are saved as they finish: a killed stage resumes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from deepcompression.config import RunParams
from deepcompression.search.confirm import Candidate, Confirmation, keep
from flows.allocation import allocation_path, confirmed_path
from flows.common import data_dir, setup
from flows.encode import encode_flow
from flows.params import model_section, params_hash
from flows.provenance import numerics
from flows.prune import prune_flow
from flows.quantize import quantize_flow
from flows.skipped import skip_reason, skipped_record
from runtime.artifacts import artifact_key, publish_table
from runtime.log import run_logger
from runtime.resilient import flow
from runtime.workspace import Workspace
from tasks.io import write_bytes_atomic, write_json


def read_candidates(root: str, model: str) -> tuple[dict, list[Candidate]]:
    """The search's record and its candidates (a record written before candidates were listed:
    its pick alone)."""
    path = allocation_path(root, model)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the search (dvc repro search@{model})")
    record = json.loads(path.read_text())
    if "allocation" not in record:
        raise RuntimeError(f"{path} holds no allocation: rerun dvc repro search@{model}")
    raw = record.get("candidates") or [record | {"trial": record.get("trial", -1)}]
    return record, [Candidate.from_dict(c) for c in raw]


def scratch_folder(workspace: Workspace) -> Path:
    """`runs/<model>/confirm/`: where candidates run, one root each, removed when done."""
    return workspace.root / "runs" / workspace.model / "confirm"


def scratch_root(workspace: Workspace, data: Path, candidate: Candidate) -> Path:
    """A root holding the dense checkpoint, the prepared data (linked) and `candidate` as the
    confirmed allocation, for the stage flows to run on."""
    root = scratch_folder(workspace) / f"trial-{candidate.trial}"
    scratch = Workspace(root, workspace.model)
    dense = scratch.checkpoint("dense")
    dense.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(workspace.checkpoint("dense"), dense)
    linked = scratch.data / data.name
    if not linked.exists():
        linked.parent.mkdir(parents=True, exist_ok=True)
        linked.symlink_to(data.resolve(), target_is_directory=True)
    chosen = {"model": workspace.model, "allocation": candidate.allocation.to_dict()}
    write_json(confirmed_path(root, workspace.model), chosen)
    return root


def confirm_candidate(
    params_path: str, workspace: Workspace, data: Path, candidate: Candidate
) -> Confirmation:
    """Full-length prune, quantize and encode of one candidate; its file bytes and errors."""
    root = scratch_root(workspace, data, candidate)
    model = workspace.model
    pruned = prune_flow(params_path, str(root), model)
    quantized = quantize_flow(params_path, str(root), model)
    encoded = encode_flow(params_path, str(root), model)
    shutil.rmtree(root, ignore_errors=True)
    return Confirmation(
        trial=candidate.trial,
        trial_bytes=candidate.file_bytes,
        trial_val_error=candidate.val_error,
        file_bytes=encoded["file_bytes"],
        pruned_val_error=pruned["val_error"],
        val_error=quantized["val_error"],
    )


def state_key(workspace: Workspace, params: RunParams) -> str:
    """What a confirmation depends on: the dense checkpoint and the model's params (with the
    search's candidates, part of each saved row)."""
    digest = hashlib.sha256(workspace.checkpoint("dense").read_bytes())
    digest.update(params_hash(params).encode())
    return digest.hexdigest()


def load_rows(state: Path, key: str) -> dict[str, dict]:
    """Saved confirmations by candidate (JSON of its allocation), for this key; else none."""
    if not state.is_file():
        return {}
    saved = json.loads(state.read_text())
    return saved["rows"] if saved.get("key") == key else {}


def save_rows(state: Path, key: str, rows: dict[str, dict]) -> None:
    """Persist the confirmations so far."""
    write_bytes_atomic(state, json.dumps({"key": key, "rows": rows}).encode())


@flow(name="confirm", flow_run_name="confirm-{model}")
def confirm_flow(params_path: str, root: str, model: str) -> dict:
    """Confirm the search's candidates in order until one file meets the validation target;
    write the kept one to search/<model>/confirmed.json."""
    params, _, workspace = setup(params_path, root, model)
    if (reason := skip_reason(params, "confirm")) is not None:
        record = skipped_record(model, reason)
        write_json(confirmed_path(root, model), record)
        run_logger().info("%s", reason)
        return record
    cfg = model_section(params_path, model, "confirm").confirm
    search, pending = read_candidates(root, model)
    data = data_dir(params, workspace)
    state = workspace.resume("confirm") / "state.json"
    key = state_key(workspace, params)
    saved = load_rows(state, key)
    rows: list[Confirmation] = []
    logger = run_logger()
    for candidate in pending[: cfg.max_points]:
        name = json.dumps(candidate.to_dict(), sort_keys=True)
        if name in saved:
            row = Confirmation(**saved[name])
        else:
            row = confirm_candidate(params_path, workspace, data, candidate)
            saved[name] = asdict(row)
            save_rows(state, key, saved)
        rows.append(row)
        logger.info(
            "confirm %s: trial %d at full length: %d bytes, validation error %.2f%% (target "
            "%.2f%%)", model, row.trial, row.file_bytes, 100 * row.val_error,
            100 * cfg.target_error,
        )  # fmt: skip
        if row.meets(cfg.target_error):
            break
    kept, met = keep(rows, cfg.target_error)
    if not met:
        logger.warning(
            "confirm %s: none of the %d front points tried meets the validation target %.2f%%; "
            "kept trial %d (%.2f%%), the lowest error. Raise confirm.max_points, lower "
            "search.error_budget or train longer", model, len(rows), 100 * cfg.target_error,
            kept.trial, 100 * kept.val_error,
        )  # fmt: skip
    chosen = next(c for c in pending if c.trial == kept.trial)
    record = {
        "model": model,
        "study": search.get("study"),
        "trial": kept.trial,
        "file_bytes": kept.file_bytes,
        "val_error": kept.val_error,
        "pruned_val_error": kept.pruned_val_error,
        "target_error": cfg.target_error,
        "meets_target": met,
        "tried": [asdict(r) for r in rows],
        "allocation": chosen.allocation.to_dict(),
        "numerics": numerics(params),
    }
    write_json(confirmed_path(root, model), record)
    shutil.rmtree(state.parent, ignore_errors=True)
    shutil.rmtree(scratch_folder(workspace), ignore_errors=True)
    publish_table(
        artifact_key(model, "confirm"),
        [
            {
                "trial": r.trial,
                "trial bytes": r.trial_bytes,
                "trial val error": f"{100 * r.trial_val_error:.2f}%",
                "file bytes": r.file_bytes,
                "file val error": f"{100 * r.val_error:.2f}%",
            }
            for r in rows
        ],
        f"confirm {model}: full-length files of the search's front (target "
        f"{100 * cfg.target_error:.2f}% validation error)",
    )
    return record
