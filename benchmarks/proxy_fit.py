#!/usr/bin/env python3
"""Can CRDM's causal path learn its proxies at all? A diagnostic, not a training.

For each client of the demo federation it optimises the proxy loss of CRDM1 ALONE (FE, exogenous
encoder and SCM; Adam; the client's own batches) for ``--steps`` steps and prints the mean proxy
MSE per block of steps, for two targets: the case proxies of the plan (what training uses) and the
label patch's foreground fraction (a target every patch shows). An MSE that stays near 1 on
z-scored targets means the path predicts the mean. It also prints the spread of the encoder's mu
across the batch next to the noise std exp(logvar / 2) that sampling u adds: when the spread is
far below the noise, the pooled features hardly depend on the image.

    .venv/bin/python -m benchmarks.proxy_fit --size small --steps 200 --work /tmp/proxy-fit
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchmarks.reporting import emit_report, log
from benchmarks.train_step import prepare_demo


def patch_fraction_targets(labels, num_nodes: int, mean: float, std: float):
    """(B, num_nodes) z-scored foreground fraction of each label patch, the same in every slot."""
    import torch

    fraction = torch.from_numpy((labels > 0).reshape(len(labels), -1).mean(1)).float()
    return ((fraction - mean) / std).view(-1, 1).repeat(1, num_nodes), torch.ones(len(labels), num_nodes, dtype=torch.bool)


def fit(client, target: str, steps: int, lr: float, block: int) -> tuple[list[float], float, float]:
    """Proxy MSE per block of steps; mu's spread across the batch and the noise std, at the start."""
    import numpy as np
    import torch

    split = client.splits["crdm1"].train()
    nodes = len(split.scm.graph.names)
    fractions = [float(v) for _ in range(50) for v in
                 (lambda b: (b.labels > 0).reshape(len(b.labels), -1).mean(1))(client.sampler.sample_batch())]
    mean, std = float(np.mean(fractions)), max(float(np.std(fractions)), 1e-6)
    params = [*client.front_end.parameters(), *split.exogenous.parameters(), *split.scm.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    losses, spread, noise = [], float("nan"), float("nan")
    for step in range(steps):
        drawn = client.sampler.sample_batch()
        images = torch.from_numpy(drawn.images)
        if target == "case proxies":
            proxies, mask = client.data.proxies.batch(drawn.case_ids, torch.device("cpu"))
        else:
            proxies, mask = patch_fraction_targets(drawn.labels, nodes, mean, std)
        if step == 0:
            with torch.no_grad():
                mu, logvar = split.exogenous(client.front_end(images))
            spread = float(mu.std(dim=0).mean()) if len(mu) > 1 else float("nan")  # batch of one: no spread
            noise = float(torch.exp(0.5 * logvar).mean())
        loss = client.network.head(images, proxies, mask).losses["proxy"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return [statistics.fmean(losses[i:i + block]) for i in range(0, steps, block)], spread, noise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("tiny", "small", "medium"), default="small")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--block", type=int, default=40, help="Steps averaged per printed MSE.")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--work", type=Path, required=True, help="Work folder (the demo is built once there).")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    from mucald_unet.config import TrainingConfig
    from mucald_unet.training.trainer import FederatedTrainer, SilentTrainingReporter

    plans_path, clients = prepare_demo(args.work.resolve(), args.size)
    lines = ["# Proxy fit: CRDM1's proxy loss optimised alone", "",
             f"- demo {args.size}, Adam lr {args.lr:g}, {args.steps} steps of the client's own batches; "
             f"MSE on z-scored targets, mean per {args.block} steps (1.0 = predicting the mean)", "",
             "| client | target | mu spread across the batch / noise std at step 0 | MSE per block |",
             "|---|---|---|---|"]
    for client_name in clients:
        for target in ("case proxies", "patch foreground fraction"):
            torch.manual_seed(0)
            trainer = FederatedTrainer(plans_path, [client_name], TrainingConfig(rounds=1, iterations_per_epoch=1),
                                       args.work / "runs" / client_name, reporter=SilentTrainingReporter())
            blocks, spread, noise = fit(trainer.clients[0], target, args.steps, args.lr, args.block)
            log(f"{client_name} {target}: {' '.join(f'{b:.3f}' for b in blocks)}")
            lines.append(f"| {client_name.split('_', 1)[-1]} | {target} | {spread:.3g} / {noise:.3g} | "
                         + " ".join(f"{b:.3f}" for b in blocks) + " |")
    emit_report("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
