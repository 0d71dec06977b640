"""Explicit-rating models (rating prediction): baselines, biased MF, SVD++, item-kNN with
baseline, and a text-aware regressor; one literal registry."""
