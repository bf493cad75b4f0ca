"""What the edge agent settles against its bundle before the first frame.

- **What may leave the board.** ``offload = "auto"`` (the default) takes it from the
  bundle: ``frames`` when its first cloud stage needs the frame (a little/big or
  ensemble bundle: the cloud model starts from the image), else ``activations`` (a
  split bundle). The choice is stated at start, with how to change it. An explicit
  ``offload = "activations"`` with a bundle that needs the frame is refused: the
  agent would never offload, and the only sign used to be an INFO line.
- **The power model's stages.** A ``stage_w`` entry (``[power.model]``) that names
  no stage of the bundle is refused: it would be silently ignored, and the energy
  figures wrong.

Either refusal is a :class:`~jetsplit.errors.ConfigError`: one line, exit 2.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from jetsplit.bundle import Bundle
from jetsplit.edge.config import EdgeConfig
from jetsplit.errors import ConfigError
from jetsplit.handoff import FRAME, needed

__all__ = ["Offload", "check_power_stages", "preflight", "resolve_offload"]

_log = logging.getLogger("jetsplit.edge")


@dataclass(frozen=True)
class Offload:
    """The offload mode in force and, when nothing may be offloaded, why."""

    mode: str  # activations | frames | none
    block: str | None  # why nothing may be offloaded, or None
    why: str  # how the mode was chosen, for the start line


def resolve_offload(config: EdgeConfig, bundle: Bundle) -> Offload:
    """The offload mode for ``bundle`` under ``config`` (see the module docstring);
    raises :class:`ConfigError` for ``activations`` with a bundle that needs frames."""
    first_cloud = bundle.first_cloud_stage()
    if first_cloud is None:
        return Offload("none", "the bundle has no cloud stages", "the bundle has no cloud stages")
    stage = bundle.stages[first_cloud].name
    needs_frame = FRAME in needed(bundle, first_cloud)
    if config.offload == "activations" and needs_frame:
        raise ConfigError(
            f"offload = activations, but bundle {bundle.name!r} sends its cloud stage {stage!r} the frame: "
            "set --offload frames (offload in edge.toml, JETSPLIT_EDGE_OFFLOAD) to let frames leave the board, "
            "or --offload none to run on the board only")
    if config.offload == "auto":
        mode = "frames" if needs_frame else "activations"
        why = (f"from the bundle: its cloud stage {stage!r} "
               + ("starts from the frame; set offload = none to keep frames on the board" if needs_frame
                  else "takes activations; frames never leave the board"))
    else:
        mode, why = config.offload, "as configured"
    if mode == "none":
        return Offload(mode, "offload = none", why)
    if not config.cloud:
        return Offload(mode, "no cloud endpoint configured", why)
    return Offload(mode, None, why)


def check_power_stages(config: EdgeConfig, bundle: Bundle) -> None:
    """Refuse ``[power.model] stage_w`` entries that name no stage of ``bundle``."""
    names = [s.name for s in bundle.stages]
    unknown = sorted(set(config.power.stage_w) - set(names))
    if unknown:
        raise ConfigError(f"[power.model].stage_w: no stage {', '.join(map(repr, unknown))} in bundle "
                          f"{bundle.name!r} (its stages: {', '.join(names)})")


def preflight(config: EdgeConfig, bundle: Bundle) -> Offload:
    """Both checks, and the start line that says what may leave the board."""
    check_power_stages(config, bundle)
    offload = resolve_offload(config, bundle)
    if offload.block is None:
        _log.info("offload: %s (%s)", offload.mode, offload.why)
    else:
        _log.info("local only: %s", offload.block)
    return offload
