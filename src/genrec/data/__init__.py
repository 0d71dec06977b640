"""Data: the data model, readers of public formats, named recipes, splits and preprocessing."""

from genrec.data import readers
from genrec.data.describe import describe, format_description
from genrec.data.interactions import Columns, Dataset, EvalSet, Histories, IdMap, Interactions
from genrec.data.preprocess import PreprocessConfig, preprocess
from genrec.data.readers import DataError
from genrec.data.recipes import RECIPES, load_dataset
from genrec.data.splits import Split, SplitConfig, split

__all__ = [
    "Columns",
    "DataError",
    "Dataset",
    "EvalSet",
    "Histories",
    "IdMap",
    "Interactions",
    "PreprocessConfig",
    "RECIPES",
    "Split",
    "SplitConfig",
    "describe",
    "format_description",
    "load_dataset",
    "preprocess",
    "readers",
    "split",
]
