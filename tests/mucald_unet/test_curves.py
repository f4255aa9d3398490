"""Training curves: a PNG per run from round records, written atomically."""

from __future__ import annotations

from PIL import Image

from mucald_unet.training.curves import plot_training_curves


def _round(client: str, r: int, dice: float, losses: dict) -> dict:
    return {"event": "round", "round": r, "client": client,
            "val_dice": {"lobe": dice, "lesion": None if r == 1 else dice / 2},
            "mean_val_dice": dice * 0.75, "losses": losses}


def _assert_png(path, folder) -> None:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temp file left behind


def test_two_clients_three_rounds(tmp_path):
    records = [{"event": "config", "rounds": 3}]
    for r in range(3):
        records.append(_round("a", r, 0.2 + 0.1 * r, {"seg": 1.0 / (r + 1), "kl_u": 1e-4, "adv": 0.7}))
        records.append(_round("b", r, 0.1 * r, {"seg": 0.9, "proxy": None, "fedprox": 1e-6,
                                                  "disc": float("nan")}))
    records.append({"event": "test", "client": "a", "dice": 0.4})
    out = tmp_path / "curves.png"
    plot_training_curves(records, out)
    _assert_png(out, tmp_path)


def test_single_client_single_round_and_signed_losses(tmp_path):
    records = [_round("only", 0, 0.3, {"seg": 0.8, "adv": -0.2})]  # negative term: linear axis
    out = tmp_path / "plots" / "curves.png"
    plot_training_curves(records, out)
    _assert_png(out, out.parent)


def test_no_round_records_writes_a_placeholder(tmp_path):
    out = tmp_path / "curves.png"
    plot_training_curves([{"event": "config"}], out)
    _assert_png(out, tmp_path)
