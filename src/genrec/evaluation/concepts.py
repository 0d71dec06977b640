"""What the latents of a RecSAE mean, and whether the model still works through them.

Given a sequential model (SASRec) and a :class:`~genrec.models.sae.RecSAE` trained on its
final hidden states:

- :func:`sequence_states` collects the hidden states (and each position's next item) of the
  training sequences, the SAE's training data;
- :class:`Concepts` turns the catalogue into binary item concepts: its attributes
  (categories / genres, brand, decade), price bands and frequent title words;
- :func:`label_latents` labels each live latent with the concept most over-represented among
  the items that activate it: ``items`` — the items its decoder direction scores highest
  through the item table (what raising it recommends); ``sequences`` — the next items of the
  training positions where it fires, weighted by its activation;
- :class:`SAEScorer` scores items from the SAE's reconstruction of the hidden state
  (optionally with one latent raised), so the protocol's evaluator measures the accuracy kept
  when the model's hidden state is replaced by its reconstruction;
- :func:`steering_effect` measures how raising a concept latent changes the share of
  recommended items that carry the concept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from genrec.data.interactions import Histories, Interactions
from genrec.evaluation.catalogue import Catalogue, normalize_text
from genrec.models._sequential import SequentialRecommender
from genrec.models.ranking import rank
from genrec.models.sae import RecSAE

__all__ = ["Concepts", "LatentConcept", "SAEScorer", "concept_precision", "label_latents",
           "last_states", "sequence_states", "steering_effect"]

_STOP = frozenset("the and for with from of in on to a an by at or no not new set pack "
                  "oz ml fl count pcs piece".split())
_WORD = re.compile(r"[a-z][a-z]{2,}")


@torch.no_grad()
def sequence_states(model: SequentialRecommender[Any], train: Interactions, *,
                    batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states at every real position of the training sequences.

    Args:
        model: A fitted sequential model (``net_`` returns ``(B, L, D)`` hidden states).
        train: Its training interactions.
        batch_size: Sequences per forward pass.

    Returns:
        ``(states (N, D), next items (N,))``: one row per position that has a next item (the
        model's training targets), dense item ids.
    """
    net = model.net_.eval()
    seq = train.histories().padded(model.config.max_len + 1)          # (U, L + 1)
    inputs, targets = seq[:, :-1], seq[:, 1:]
    states, nexts = [], []
    for lo in range(0, len(seq), batch_size):
        x, t = inputs[lo : lo + batch_size], targets[lo : lo + batch_size]
        hidden, _ = net(x)                                             # (B, L, D)
        keep = (x > 0) & (t > 0)
        states.append(hidden[keep])
        nexts.append(t[keep] - 1)
    return torch.cat(states), torch.cat(nexts)


@torch.no_grad()
def last_states(model: SequentialRecommender[Any], histories: Histories, *,
                batch_size: int = 512) -> torch.Tensor:
    """The hidden state after each history's last item (what scoring uses): ``(B, D)``."""
    net = model.net_.eval()
    seq = histories.padded(model.config.max_len)                       # (B, L)
    out = [net(seq[lo : lo + batch_size])[0][:, -1] for lo in range(0, len(seq), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, net.item_table().shape[1])


@dataclass
class Concepts:
    """Binary item concepts.

    Attributes:
        names: ``field=value`` per concept: catalogue attributes, ``price=$lo-$hi`` bands and
            ``title=word``.
        matrix: Item x concept indicator, ``(n_items, n_concepts)``.
    """

    names: list[str]
    matrix: sp.csr_matrix

    @classmethod
    def from_catalogue(cls, catalog: Catalogue, *, price_bands: int = 4,
                       title_words: bool = True, min_items: int = 5,
                       max_share: float = 0.25) -> Concepts:
        """Attributes, price quantile bands and title words of ``catalog``.

        Args:
            catalog: The catalogue.
            price_bands: Quantile bands of the known prices (0: none).
            title_words: Add words of at least three letters found in ``min_items`` or more
                titles and in at most ``max_share`` of them.
            min_items: Fewest items a title word must occur in.
            max_share: Largest share of items a title word may occur in.
        """
        n = catalog.n_items
        names = [a.key for a in catalog.vocab]
        blocks = [catalog.item_attr.tocsr().astype(np.float32)]
        known = np.flatnonzero(np.isfinite(catalog.prices))
        if price_bands and len(known) >= price_bands:
            p = catalog.prices[known]
            edges = np.unique(np.quantile(p, np.linspace(0, 1, price_bands + 1)))
            band = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
            names += [f"price=${edges[b]:.2f}-${edges[b + 1]:.2f}" for b in range(len(edges) - 1)]
            blocks.append(sp.csr_matrix((np.ones(len(known), np.float32), (known, band)),
                                        shape=(n, len(edges) - 1)))
        if title_words:
            vocab: dict[str, int] = {}
            rows, cols = [], []
            for i, t in enumerate(catalog.titles):
                for w in sorted(set(_WORD.findall(normalize_text(t))) - _STOP):
                    rows.append(i)
                    cols.append(vocab.setdefault(w, len(vocab)))
            m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                              shape=(n, len(vocab)))
            df = np.asarray(m.sum(0)).ravel()
            keep = np.flatnonzero((df >= min_items) & (df <= max_share * n))
            words = sorted(vocab, key=vocab.__getitem__)
            names += [f"title={words[j]}" for j in keep]
            blocks.append(m[:, keep])
        return cls(names, sp.hstack(blocks, format="csr"))

    def index(self, name: str) -> int:
        """Column of the concept ``name``."""
        return self.names.index(name)


@dataclass
class LatentConcept:
    """The label of one latent.

    Attributes:
        latent: Latent index.
        concept: ``field=value`` of the label (None: no concept passes the thresholds).
        precision: Share of the activating items' weight on items with the concept.
        base_rate: The same share for all items (``items``) or all next items
            (``sequences``): what precision a random latent would have.
        lift: ``precision / base_rate``.
        support: Activating items that carry the concept.
        mean_activation: Mean non-zero activation on the training states.
        max_activation: Largest activation on the training states (the steering unit).
        top_items: The activating items, strongest first (dense ids).
    """

    latent: int
    concept: str | None
    precision: float
    base_rate: float
    lift: float
    support: int
    mean_activation: float
    max_activation: float
    top_items: list[int]

    def to_dict(self, catalog: Catalogue | None = None) -> dict[str, Any]:
        """Plain dict (with titles of the first five items if ``catalog``)."""
        d = asdict(self)
        if catalog is not None:
            d["top_titles"] = [catalog.title(i, 60) for i in self.top_items[:5]]
        return d


@torch.no_grad()
def label_latents(sae: RecSAE, concepts: Concepts, states: torch.Tensor, *,
                  source: Literal["items", "sequences"] = "items",
                  item_table: torch.Tensor | None = None, next_items: torch.Tensor | None = None,
                  top_n: int = 20, min_lift: float = 2.0, min_support: int = 3,
                  batch_size: int = 8192) -> list[LatentConcept]:
    """Label every latent that fires on ``states`` with its most precise over-represented
    concept.

    Args:
        sae: The fitted SAE.
        concepts: Item concepts.
        states: Training hidden states ``(N, D)`` (activation statistics, live latents).
        source: ``items``: a latent's activating items are the ``top_n`` items its decoder
            direction scores highest through ``item_table``; ``sequences``: the next items
            (``next_items``, ``(N,)``) of the states where it fires, weighted by activation,
            the ``top_n`` heaviest kept.
        item_table: Item vectors ``(I, D)`` the model scores with (``items``).
        next_items: Next item of every state (``sequences``).
        top_n: Activating items per latent.
        min_lift: Least over-representation of a label.
        min_support: Fewest activating items carrying the label.
        batch_size: States per encoding pass.

    Returns:
        One :class:`LatentConcept` per live latent, in latent order.

    Raises:
        ValueError: If the input the ``source`` needs is missing.
    """
    n_items = concepts.matrix.shape[0]
    n_lat = sae.config.n_latents
    act_sum = torch.zeros(n_lat, dtype=torch.float64)
    act_cnt = torch.zeros(n_lat, dtype=torch.float64)
    act_max = torch.zeros(n_lat, dtype=torch.float64)
    mass = torch.zeros(n_lat, n_items, dtype=torch.float64) if source == "sequences" else None
    if source == "sequences" and next_items is None:
        raise ValueError("source='sequences' needs next_items")
    if source == "items" and item_table is None:
        raise ValueError("source='items' needs item_table")
    for lo in range(0, len(states), batch_size):
        z = sae.encode(states[lo : lo + batch_size]).double()          # (B, n)
        act_sum += z.sum(0)
        act_cnt += (z > 0).sum(0)
        act_max = torch.maximum(act_max, z.max(0).values)
        if mass is not None and next_items is not None:
            mass.index_add_(1, next_items[lo : lo + batch_size].long(), z.T)  # (n, I)
    alive = torch.nonzero(act_cnt > 0).ravel().tolist()
    if source == "items":
        assert item_table is not None
        weights = (sae.directions_ @ item_table.float().T).double()    # (n, I) item logits
        base = np.full(n_items, 1.0 / n_items)
    else:
        assert mass is not None and next_items is not None
        weights = mass
        counts = np.bincount(next_items.numpy(), minlength=n_items).astype(np.float64)
        base = counts / counts.sum()
    cm = concepts.matrix.tocsc()
    base_rate = np.asarray(cm.T @ base).ravel()                       # (C,)
    out = []
    for j in alive:
        w = weights[j]
        top = torch.topk(w, min(top_n, n_items)).indices.numpy()
        top = top[w[top].numpy() > 0]
        if not len(top):
            continue
        tw = np.ones(len(top)) if source == "items" else w[top].numpy()
        tw = tw / tw.sum()
        sub = concepts.matrix[top]                                     # (top, C)
        prec = np.asarray(sub.T @ tw).ravel()                          # (C,)
        support = np.asarray(sub.sum(0)).ravel()
        lift = prec / np.maximum(base_rate, 1e-12)
        ok = np.flatnonzero((lift >= min_lift) & (support >= min_support))
        mean_act, max_act = float(act_sum[j] / act_cnt[j]), float(act_max[j])
        if len(ok):
            c = ok[np.lexsort((-lift[ok], -prec[ok]))[0]]
            out.append(LatentConcept(j, concepts.names[c], float(prec[c]), float(base_rate[c]),
                                     float(lift[c]), int(support[c]), mean_act, max_act,
                                     top.tolist()))
        else:
            out.append(LatentConcept(j, None, 0.0, 0.0, 0.0, 0, mean_act, max_act,
                                     top.tolist()))
    return out


def concept_precision(labels: Sequence[LatentConcept]) -> dict[str, float]:
    """Summary of labels: live latents, labelled share, mean precision, base rate and lift of
    the labelled ones."""
    lab = [x for x in labels if x.concept is not None]
    mean = (lambda v: float(np.mean(v)) if v else 0.0)  # noqa: E731
    return {"live_latents": len(labels), "labelled": len(lab),
            "labelled_share": len(lab) / len(labels) if labels else 0.0,
            "mean_precision": mean([x.precision for x in lab]),
            "mean_base_rate": mean([x.base_rate for x in lab]),
            "mean_lift": mean([x.lift for x in lab]),
            "distinct_concepts": len({x.concept for x in lab})}


class SAEScorer:
    """Scores of a sequential model whose last hidden state is replaced by its SAE
    reconstruction (a :class:`~genrec.evaluation.evaluator.Scorer`).

    Args:
        model: The fitted sequential model.
        sae: An SAE trained on its hidden states.
        steer: ``{latent: added activation}`` applied to the codes before decoding.
        substitute: False scores from the model's own hidden state (the reference).
    """

    def __init__(self, model: SequentialRecommender[Any], sae: RecSAE, *,
                 steer: dict[int, float] | None = None, substitute: bool = True) -> None:
        self.model = model
        self.sae = sae
        self.steer = dict(steer or {})
        self.substitute = substitute

    @torch.no_grad()
    def hidden(self, histories: Histories) -> torch.Tensor:
        """The (reconstructed, steered) hidden states ``(B, D)``."""
        h = last_states(self.model, histories)
        if not self.substitute:
            return h
        z = self.sae.encode(h)                                         # (B, n)
        for j, add in self.steer.items():
            z[:, j] += add
        return self.sae.decode(z)

    @torch.no_grad()
    def score(self, histories: Histories, items: np.ndarray | None = None) -> torch.Tensor:
        """Scores ``(B, n_items)`` (or ``(B, len(items))``)."""
        table = self.model.net_.item_table()[1:]                       # (I, D)
        s = self.hidden(histories) @ table.T                           # (B, I)
        return s if items is None else s[:, torch.as_tensor(items)]


@torch.no_grad()
def steering_effect(model: SequentialRecommender[Any], sae: RecSAE, histories: Histories,
                    label: LatentConcept, concepts: Concepts, *, strength: float = 2.0,
                    k: int = 10) -> dict[str, Any]:
    """Raise one labelled latent and measure the share of top-``k`` items with its concept.

    The latent's code is raised by ``strength`` times its largest activation on the training
    states, for every user of ``histories``; items already seen stay excluded.

    Latents labelled from ``sequences`` steer best: their activating items are ones the
    model does predict in some context, while the top decoder-direction items (``items``)
    can be items too rare to enter any top-``k``.

    Args:
        model: The fitted sequential model.
        sae: Its SAE.
        histories: The users to recommend to.
        label: A labelled latent (``concept`` not None).
        concepts: The concepts ``label`` refers to.
        strength: Added activation, in units of the latent's largest activation.
        k: List length.

    Returns:
        ``share_original`` (model's own hidden state), ``share_reconstructed`` (SAE
        reconstruction, no steering), ``share_steered`` and the added activation.

    Raises:
        ValueError: If ``label`` has no concept.
    """
    if label.concept is None:
        raise ValueError(f"latent {label.latent} has no concept label")
    has = np.asarray(concepts.matrix[:, concepts.index(label.concept)].todense()).ravel() > 0
    add = strength * label.max_activation

    def share(scorer: SAEScorer) -> float:
        top, _ = rank(scorer.score(histories), histories, k)            # (B, k)
        top = top.numpy()
        valid = top >= 0
        return float(has[top[valid]].mean()) if valid.any() else 0.0

    return {"latent": label.latent, "concept": label.concept, "added_activation": add,
            "share_original": share(SAEScorer(model, sae, substitute=False)),
            "share_reconstructed": share(SAEScorer(model, sae)),
            "share_steered": share(SAEScorer(model, sae, steer={label.latent: add}))}
