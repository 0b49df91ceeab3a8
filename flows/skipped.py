"""What `sensitivity` and `search` write when a model's `allocation` is `params`: nothing is
computed (prune, quantize and encode take params.yaml's tables), yet DVC needs every declared
output, so each is a small constant record or figure saying why the stage did no work."""

from __future__ import annotations

import io
import textwrap

from deepcompression.config import RunParams


def skip_reason(params: RunParams, stage: str) -> str | None:
    """Why `stage` (sensitivity, search) does no work for this model, or None when it must run."""
    if params.allocation == "searched":
        return None
    return (
        f"{stage} not run: models.{params.model.name}.allocation is 'params' (prune, quantize "
        "and encode take the tables of params.yaml); set it to 'searched' to run it"
    )


def skipped_record(model: str, reason: str) -> dict[str, str]:
    """The metrics/record file of a stage that did no work."""
    return {"model": model, "skipped": reason}


def skipped_png(reason: str) -> bytes:
    """A small white PNG with `reason` written on it (same text, same bytes)."""
    from PIL import Image, ImageDraw

    lines = textwrap.wrap(reason, 70)
    image = Image.new("L", (440, 16 + 14 * len(lines)), 255)
    ImageDraw.Draw(image).multiline_text((8, 8), "\n".join(lines), fill=0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
