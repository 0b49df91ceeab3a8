"""Your own trained weights instead of training: a state_dict file checked against the network.

Pure: bytes in (read with ``torch.load(weights_only=True)``, so a file can hold only tensors and
plain data), a loaded network out; a file that does not fit lists every missing, unexpected and
mis-shaped key at once.
"""

from __future__ import annotations

import io

import torch
from torch import nn

MAX_LISTED = 20
"""Keys listed per kind of mismatch in an error; the rest are counted."""


class PretrainedError(ValueError):
    """A checkpoint file is unreadable, not a state_dict, or does not fit the network."""


def state_dict_from_bytes(data: bytes, name: str) -> dict[str, torch.Tensor]:
    """The state_dict in a ``torch.save`` file: ``{key: tensor}``, or such a dict under a
    ``"state_dict"`` key (as many training scripts save it)."""
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or unsafe files
        raise PretrainedError(
            f"{name}: not a readable torch.save file of tensors ({type(exc).__name__}: "
            f"{str(exc)[:300]}); save it with torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not (
        isinstance(loaded, dict)
        and loaded
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items())
    ):
        raise PretrainedError(
            f"{name}: holds a {type(loaded).__name__}, not a state_dict {{name: tensor}}; save it "
            "with torch.save(model.state_dict(), path)."
        )
    return loaded


def _listed(keys: list[str]) -> str:
    """Up to MAX_LISTED keys, then a count of the others."""
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


def load_pretrained_(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Load `state` into `model` in place; any key mismatch is one error listing them all."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (network: {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        arch = getattr(model, "dc_arch", {"name": type(model).__name__})
        lines = [f"{name} does not fit network {arch.get('name')!r} built for this data:"]
        if missing:
            lines.append(f"missing keys: {_listed(missing)}")
        if unexpected:
            lines.append(f"unexpected keys: {_listed(unexpected)}")
        if wrong:
            lines.append(f"wrong shapes: {_listed(wrong)}")
        if unexpected and all(k.startswith("module.") for k in unexpected):
            lines.append("(keys start with 'module.': save model.module.state_dict() instead)")
        raise PretrainedError("\n  ".join(lines))
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
