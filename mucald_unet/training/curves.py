"""Training curves from run-log records: per client, validation Dice and loss terms per round.

Drawn on a standalone matplotlib Figure (Agg canvas) so plotting never touches pyplot's global
state or the user's backend, and written atomically so a viewer never sees a half-written PNG.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_NAN = float("nan")


def _number(value: object) -> float:
    """A plottable float; None, non-numbers and non-finite values become NaN, which draws a gap."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _NAN
    value = float(value)
    return value if math.isfinite(value) else _NAN


def _round_records(records: Sequence[Mapping]) -> dict[str, dict[int, Mapping]]:
    """client -> round -> record; a later record for the same round wins (e.g. a re-run round)."""
    by_client: dict[str, dict[int, Mapping]] = {}
    for record in records:
        if record.get("event") != "round":
            continue
        round_index, client = record.get("round"), record.get("client")
        if isinstance(round_index, bool) or not isinstance(round_index, int) or client is None:
            continue
        by_client.setdefault(str(client), {})[round_index] = record
    return by_client


def _series(rows: Mapping[int, Mapping], field: str) -> dict[str, list[float]]:
    """name -> values per round for a dict-valued field; names keep first-seen order."""
    names: dict[str, None] = {}
    for record in rows.values():
        values = record.get(field)
        if isinstance(values, Mapping):
            names.update(dict.fromkeys(str(k) for k in values))
    series: dict[str, list[float]] = {}
    for name in names:
        column = []
        for record in rows.values():
            values = record.get(field)
            column.append(_number(values.get(name)) if isinstance(values, Mapping) else _NAN)
        series[name] = column
    return series


def _draw_client(dice_ax: Axes, loss_ax: Axes, client: str, rows: Mapping[int, Mapping]) -> None:
    from matplotlib.ticker import MaxNLocator

    rounds = list(rows)
    for name, values in _series(rows, "val_dice").items():
        dice_ax.plot(rounds, values, marker="o", markersize=3, label=name)
    mean = [_number(r.get("mean_val_dice")) for r in rows.values()]
    if any(not math.isnan(v) for v in mean):
        dice_ax.plot(rounds, mean, linestyle="--", color="black", marker="o", markersize=3,
                     label="mean")
    dice_ax.set_title(f"{client}: validation Dice")
    dice_ax.set_ylabel("Dice")
    dice_ax.set_ylim(-0.02, 1.02)

    losses = _series(rows, "losses")
    from matplotlib import colormaps

    palette = colormaps["tab20"]  # up to ~16 terms: tab10 would repeat colours
    for index, (name, values) in enumerate(sorted(losses.items())):
        loss_ax.plot(rounds, values, marker="o", markersize=3, label=name, color=palette(index % 20),
                     linestyle="-" if index < 20 else "--")
    present = [v for values in losses.values() for v in values if not math.isnan(v)]
    if present and min(present) > 0:
        loss_ax.set_yscale("log")  # terms span orders of magnitude (KL ~1e-4 vs seg ~1)
    loss_ax.set_title(f"{client}: loss terms")
    loss_ax.set_ylabel("loss")

    for ax in (dice_ax, loss_ax):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # beside the axes, so it never hides a curve
            ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def plot_training_curves(records: Sequence[Mapping], out_png: Path) -> None:
    """Write one row per client (Dice left, losses right) to ``out_png``; non-round events ignored.

    With no round records yet, a placeholder figure saying so is written, so a caller can plot
    unconditionally after every round, including before the first one finished.
    """
    from matplotlib.figure import Figure

    out_png = Path(out_png)
    by_client = {c: dict(sorted(rows.items())) for c, rows in sorted(_round_records(records).items())}
    n_rows = max(1, len(by_client))
    fig = Figure(figsize=(14, 3.6 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, 2, squeeze=False)
    if not by_client:
        for ax in axes[0]:
            ax.set_axis_off()
        fig.text(0.5, 0.5, "no round records yet", ha="center", va="center")
    for row, (client, rows) in enumerate(by_client.items()):
        _draw_client(axes[row][0], axes[row][1], client, rows)

    out_png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_png.name}.", suffix=".tmp", dir=out_png.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png", dpi=100)
        os.replace(tmp_name, out_png)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
