"""FedEM (Marfoq et al., 2021): every client's data is a mixture of M shared components; the
components are federated, the mixture weights pi are personal (``--fedem-components``, default 3).

Here a component is a server segment: the server runs the M bodies on each split-1 batch and
returns their M split-2 maps stacked (M x the bytes of one method's features and gradients). The
client's back end turns each into class logits; its E-step gives each sample responsibilities
q(m) proportional to pi_m exp(-loss_m), the step minimises the q-weighted loss (M-step), and at
round end pi becomes the round's mean responsibility. The server averages each component over
the clients (FedAvg of every key, weighted by ``--aggregation``; FedEM weighs by sample count,
``--aggregation samples``). Prediction is sum_m pi_m p_m(y | x). What differs from the paper: the
E-step runs on the batches a round trains on, not on a full pass over the local data (a pass
over every case would cost M full inferences per round), so pi is the mean over the round's patches.
"""

from __future__ import annotations

from mucald_unet.federation.strategies.fedavg import FedAvg
from mucald_unet.federation.strategies.registry import MethodSpec, register

register(MethodSpec("fedem", "a mixture of --fedem-components server segments, each averaged; the mixture "
                    "weights pi are personal (E-step at the client)", FedAvg, options=("fedem_components",),
                    mixture=True))
