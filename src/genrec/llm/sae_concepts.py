"""What a SASRec user state means, in catalogue terms: the active RecSAE concepts.

For an explanation, a user's last hidden state is encoded by a
:class:`~genrec.models.sae.RecSAE`; its most active latents that carry a concept label
(:func:`~genrec.evaluation.concepts.label_latents`, labelled from the training sequences)
are the model's "reasons" for this user. A concept is only ever shown when it is an attribute
value of the catalogue (``brand=OPI``, ``categories=Nail Polish``, ``genres=Drama``): labels
are built from the catalogue's attributes only, and each one is checked again through the
grounding checker before it is cited. For each explained item the same checker says whether
the item carries the concept (``grounded``), has other values of that field
(``contradicted``) or none (``unsupported``).

:func:`fit_or_load_sae` loads a saved RecSAE, or fits one on the model's training states
with a small budget and saves it, so ``genrec explain --sae PATH`` works from a cold start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genrec.data.interactions import Histories, Interactions
from genrec.evaluation.catalogue import Attribute, Catalogue
from genrec.evaluation.concepts import (
    Concepts,
    LatentConcept,
    label_latents,
    last_states,
    sequence_states,
)
from genrec.evaluation.grounding import GroundingChecker
from genrec.models._sequential import SequentialRecommender
from genrec.models.base import Recommender
from genrec.models.sae import RecSAE

__all__ = ["ActiveConcept", "SAEConcepts", "fit_or_load_sae"]

_log = logging.getLogger(__name__)


def _sequential(model: Recommender[Any]) -> SequentialRecommender[Any]:
    if not isinstance(model, SequentialRecommender):
        raise ValueError(f"SAE concepts need a sequential model with hidden states (sasrec); "
                         f"got {model.config.kind}")
    return model


def fit_or_load_sae(path: str | Path, model: Recommender[Any], train: Interactions, *,
                    epochs: int = 3, n_latents: int = 256, k: int = 8) -> RecSAE:
    """The RecSAE saved at ``path``, or a new one fitted on ``model``'s training states.

    Args:
        path: A folder written by :meth:`RecSAE.save`; created when absent.
        model: The fitted sequential model.
        train: Its training interactions.
        epochs: Training epochs of a new SAE (the small budget).
        n_latents: Dictionary size of a new SAE.
        k: Active latents per state of a new SAE.

    Returns:
        The SAE.

    Raises:
        ValueError: If the model is not sequential or the SAE's width differs from the
            model's hidden states.
    """
    seq = _sequential(model)
    path = Path(path)
    dim = seq.net_.item_table().shape[1]
    if (path / "config.json").is_file():
        sae = RecSAE.load(path)
        if sae.net_.W_dec.shape[0] != dim:
            raise ValueError(f"{path}: SAE width {sae.net_.W_dec.shape[0]} != model width {dim}")
        return sae
    states, _ = sequence_states(seq, train)
    sae = RecSAE(n_latents=n_latents, k=k, epochs=epochs).fit(states)
    sae.save(path)
    _log.info("fitted a RecSAE (%d latents, k=%d, %d epochs) and saved it to %s",
              n_latents, k, epochs, path)
    return sae


@dataclass
class ActiveConcept:
    """One concept of a user's state.

    Attributes:
        latent: The SAE latent.
        concept: ``field=value``, an attribute of the catalogue.
        activation: The latent's activation on the user's state.
        precision: Share of the latent's activating items that carry the concept.
        lift: ``precision`` over the concept's base rate.
        items: Per explained item (dense id), the grounding status of "this item has the
            concept": ``grounded``, ``contradicted`` or ``unsupported``.
    """

    latent: int
    concept: str
    activation: float
    precision: float
    lift: float
    items: dict[int, str]

    def to_dict(self, catalog: Catalogue) -> dict[str, Any]:
        """Plain dict with raw item ids."""
        return {"latent": self.latent, "concept": self.concept, "activation": self.activation,
                "precision": self.precision, "lift": self.lift,
                "items": {catalog.raw_ids[i]: s for i, s in self.items.items()}}


class SAEConcepts:
    """Concept-labelled latents of a RecSAE over a sequential model.

    Args:
        model: The fitted sequential model (SASRec).
        sae: An SAE fitted on its hidden states.
        catalog: The catalogue.
        labels: Latent labels (see :meth:`build`).
    """

    def __init__(self, model: Recommender[Any], sae: RecSAE, catalog: Catalogue,
                 labels: Sequence[LatentConcept]) -> None:
        self.model = _sequential(model)
        self.sae = sae
        self.catalog = catalog
        self.checker = GroundingChecker(catalog)
        self.labels = {x.latent: x for x in labels if x.concept is not None}
        self.rejected_: list[str] = []
        self._attributes: dict[str, Attribute | None] = {}

    @classmethod
    def build(cls, model: Recommender[Any], sae: RecSAE, train: Interactions,
              catalog: Catalogue, *, min_lift: float = 2.0) -> SAEConcepts:
        """Label the SAE's latents from the training sequences with catalogue attributes.

        Only catalogue attributes are candidate labels (no price bands, no title words), so
        every label can be checked against the catalogue.
        """
        seq = _sequential(model)
        states, nexts = sequence_states(seq, train)
        concepts = Concepts.from_catalogue(catalog, price_bands=0, title_words=False)
        labels = label_latents(sae, concepts, states, source="sequences", next_items=nexts,
                               min_lift=min_lift)
        return cls(seq, sae, catalog, labels)

    def attribute(self, concept: str) -> Attribute | None:
        """The catalogue attribute a concept names, checked by the grounding checker (None:
        not an attribute value of the catalogue, never cited)."""
        if concept not in self._attributes:
            self._attributes[concept] = self._resolve(concept)
        return self._attributes[concept]

    def _resolve(self, concept: str) -> Attribute | None:
        if "=" not in concept:
            return None
        a = Attribute.from_key(concept)
        if a not in self.catalog.attr_index:
            return None
        # The one grounding path: an item carrying the attribute must ground the claim.
        item = next(iter(self.catalog.item_attr[:, self.catalog.attr_index[a]].nonzero()[0]),
                    None)
        if item is None:
            return None
        rep = self.checker.check_claims(int(item), [], {a.field: a.value})
        return a if rep.claims and rep.ok else None

    @torch.no_grad()
    def active(self, history: Sequence[int], items: Sequence[int] = (), *, top: int = 5,
               user: int = -1) -> list[ActiveConcept]:
        """The ``top`` most active labelled latents of the state after ``history``.

        Args:
            history: The user's history (dense ids, oldest first).
            items: Explained items: each concept's grounding status on each of them.
            top: Concepts returned at most (one per concept: the most active latent wins).
            user: Dense user id (-1: anonymous).

        Returns:
            The concepts, most active first; labels that are no catalogue attribute are
            dropped and listed in ``rejected_``.
        """
        h = Histories.from_lists([[int(i) for i in history]], self.catalog.n_items,
                                 users=[int(user)])
        z = self.sae.encode(last_states(self.model, h))[0]             # (n_latents,)
        order = torch.argsort(z, descending=True).tolist()
        out: list[ActiveConcept] = []
        seen: set[str] = set()
        for j in order:
            if len(out) >= top or float(z[j]) <= 0:
                break
            lab = self.labels.get(j)
            if lab is None or lab.concept is None or lab.concept in seen:
                continue
            a = self.attribute(lab.concept)
            if a is None:
                self.rejected_.append(lab.concept)
                continue
            seen.add(lab.concept)
            status = {int(i): self.checker.check_claims(int(i), history,
                                                        {a.field: a.value}).claims[0].status
                      for i in items}
            out.append(ActiveConcept(j, lab.concept, float(z[j]), lab.precision, lab.lift,
                                     status))
        return out
