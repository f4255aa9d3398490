"""Label inference from what the server sees at split 2: in U-shaped split learning the labels stay
at the client, but every training step sends the server the gradient of the client's loss with
respect to the split-2 features, which the server itself computed.

Two attackers, both at the server:
* gradient norm and direction (the attacks of Li et al. 2022, per voxel): the rare classes are
  fitted worst, so their gradients are largest; and each voxel's gradient points towards its
  class, so k-means on the unit vectors (k = classes) groups them. The attacker knows how common
  each class is (the prior) and names the groups by it;
* model completion (Fu et al. 2022): a linear voxel classifier on the split-2 features, trained on
  the auxiliary cases' labels, applied to the private cases' features.
Both are scored per attacked case against the labels at the resolution of what crosses (majority
label of each block), beside the prior-only guess: every voxel the most common class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from torch import Tensor, nn

from inference.audit.image_metrics import bootstrap
from inference.model import TrainedClientModel
from mucald_unet.networks.mixture import split_components

COMPLETION_STEPS = 300


def split2_exchange(model: TrainedClientModel, images: Tensor, labels: Tensor,
                    loss: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """(split-2 features, the gradient the client sends back for them) of one batch, as in a
    training step; the proxy terms of mucald's CRDM2 are left out (they barely turn the gradient)."""
    network = model.network
    network.train()
    try:
        with torch.enable_grad():
            head = network.head(images)
            features = model.server_segment(head.features).detach().requires_grad_(True)
            tail = network.through_split("crdm2", features)
            logits = network.decode(tail.features, [skip.detach() for skip in head.skips])
            logits = logits if network.mixture is None else network.mixture.combine(logits)
            gradient, = torch.autograd.grad(loss(logits, labels), features)
    finally:
        network.eval()
    if network.mixture is None:
        return features.detach(), gradient
    return per_sample(features.detach(), network.mixture.count), per_sample(gradient, network.mixture.count)


def per_sample(stacked: Tensor, count: int) -> Tensor:
    """FedEM's (M x B, C, ...) component-major maps -> (B, M x C, ...): every component's map of a
    sample side by side, as the server holds them."""
    components = split_components(stacked, count)
    return components.movedim(0, 1).reshape(components.shape[1], -1, *components.shape[3:])


def labels_at(labels: Tensor, shape: tuple[int, ...], num_classes: int) -> Tensor:
    """(N, 1, *patch) labels -> (N, *shape): the majority label of each block of the patch."""
    one_hot = nn.functional.one_hot(labels[:, 0].long(), num_classes).movedim(-1, 1).float()
    pooling = tuple(p // s for p, s in zip(labels.shape[2:], shape))
    pool = (nn.functional.avg_pool2d, nn.functional.avg_pool3d)[len(shape) - 2]
    return pool(one_hot, pooling).argmax(1)


def voxel_gradients(gradients: Tensor) -> Tensor:
    """(N, C, *spatial) -> (N x voxels, C) float64."""
    return gradients.movedim(1, -1).reshape(-1, gradients.shape[1]).double()


def by_gradient_norm(gradients: Tensor, class_order: list[int], prior: np.ndarray) -> Tensor:
    """Norm attack: voxels the model fits worst (largest gradients) are the rare classes; the
    ``prior`` share of the most common class with the smallest norms gets it, the rest the next."""
    norms = voxel_gradients(gradients).norm(dim=1).numpy()
    threshold = np.quantile(norms, prior[class_order[0]])
    names = np.where(norms <= threshold, class_order[0], class_order[1] if len(class_order) > 1 else class_order[0])
    return torch.from_numpy(names).reshape(gradients.shape[0], *gradients.shape[2:])


def by_gradient_direction(gradients: Tensor, class_order: list[int], seed: int) -> Tensor:
    """Direction attack: k-means on the unit gradient vectors (k = classes); the cluster with the
    smallest mean norm (the best-fitted voxels) gets the most common class, and so on."""
    vectors = voxel_gradients(gradients)
    norms = vectors.norm(dim=1, keepdim=True)
    unit = (vectors / norms.clamp_min(1e-30)).numpy()
    _, assignment = kmeans2(unit, len(class_order), minit="++", seed=seed)
    mean_norm = [norms[assignment == k].mean().item() if (assignment == k).any() else np.inf
                 for k in range(len(class_order))]
    names = np.empty(len(class_order), dtype=np.int64)
    names[np.argsort(mean_norm)] = class_order
    return torch.from_numpy(names[assignment]).reshape(gradients.shape[0], *gradients.shape[2:])


def complete_model(features: Tensor, labels: Tensor, num_classes: int, seed: int) -> nn.Module:
    """A voxel-wise linear classifier split-2 features -> labels (the attacker's completed model)."""
    torch.manual_seed(seed)
    convolution = (nn.Conv2d, nn.Conv3d)[features.ndim - 4]
    classifier = convolution(features.shape[1], num_classes, 1)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2)
    for _ in range(COMPLETION_STEPS):
        loss = nn.functional.cross_entropy(classifier(features), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return classifier.eval()


def label_scores(predicted: Tensor, truth: Tensor, num_classes: int, seed: int) -> dict[str, dict]:
    """Per-case voxel accuracy and mean foreground Dice, as means with bootstrap intervals."""
    cases = len(truth)
    accuracy = (predicted == truth).reshape(cases, -1).double().mean(1).numpy()
    dices = []
    for p, t in zip(predicted, truth):
        per_class = [2 * ((p == c) & (t == c)).sum().item() / max(((p == c).sum() + (t == c).sum()).item(), 1)
                     for c in range(1, num_classes) if (t == c).any() or (p == c).any()]
        dices.append(np.mean(per_class) if per_class else 1.0)
    return {"accuracy": bootstrap(accuracy, seed=seed).to_dict(),
            "foreground_dice": bootstrap(np.asarray(dices), seed=seed).to_dict()}


def label_inference(model: TrainedClientModel, private: tuple[Tensor, Tensor], auxiliary: tuple[Tensor, Tensor],
                    loss: Callable[[Tensor, Tensor], Tensor], seed: int, batch: int = 16) -> dict:
    """Both attackers and the prior-only guess on the private (images, labels)."""
    num_classes = model.plan.num_classes

    def exchange(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        parts = [split2_exchange(model, images[i:i + batch].to(model.device), labels[i:i + batch].to(model.device),
                                 loss) for i in range(0, len(images), batch)]
        return torch.cat([f for f, _ in parts]).cpu(), torch.cat([g for _, g in parts]).cpu()
    torch.manual_seed(seed)
    features, gradients = exchange(*private)
    aux_features, _ = exchange(*auxiliary)
    shape = tuple(features.shape[2:])
    truth, aux_truth = labels_at(private[1], shape, num_classes), labels_at(auxiliary[1], shape, num_classes)
    counts = np.bincount(aux_truth.flatten().numpy(), minlength=num_classes)
    prior, class_order = counts / counts.sum(), [int(c) for c in np.argsort(-counts)]
    classifier = complete_model(aux_features, aux_truth, num_classes, seed)
    with torch.no_grad():
        completed = classifier(features).argmax(1)
    guesses = {"prior": torch.full_like(truth, class_order[0]),
               "gradient_norm": by_gradient_norm(gradients, class_order, prior),
               "gradient_direction": by_gradient_direction(gradients, class_order, seed),
               "model_completion": completed}
    return {"resolution": list(shape),
            **{name: label_scores(guess, truth, num_classes, seed) for name, guess in guesses.items()}}
