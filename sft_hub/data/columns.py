"""Whole columns of a ``datasets.Dataset`` without a Python pass per row.

``dataset[column]`` in datasets 5 is a lazy column that numpy and list comprehensions read row by
row (20,000 rows: seconds); reading the column as Arrow is one C pass. The time to the first
training step must not grow with the data (issue 17), so the helpers every task uses at start-up
read columns this way.
"""
from __future__ import annotations

from math import ceil
from typing import Any


def column_values(dataset: Any, column: str) -> list:
    """The column's values in dataset order (honouring any selection of rows), as Python objects."""
    try:
        table = dataset.select_columns([column]).with_format("arrow")[:]
        return table.column(column).to_pylist()
    except (AttributeError, KeyError, TypeError, ValueError):  # not a datasets.Dataset
        return list(dataset[column])


def stratified_split(dataset: Any, *, test_size: float, seed: int, column: str):
    """``dataset.train_test_split(test_size, seed=seed, stratify_by_column=column)``, the same
    rows in the same order, with the labels read as one Arrow column instead of row by row.
    Raises ValueError where datasets does (e.g. a class with a single member)."""
    import numpy as np
    from datasets import ClassLabel, DatasetDict
    from datasets.utils.stratify import stratified_shuffle_split_generate_indices

    if not isinstance(dataset.features.get(column), ClassLabel) or len(dataset) < 2:
        return dataset.train_test_split(test_size=test_size, seed=seed, stratify_by_column=column)
    n_test = ceil(test_size * len(dataset))
    n_train = len(dataset) - n_test
    if n_train <= 0 or n_test <= 0:
        return dataset.train_test_split(test_size=test_size, seed=seed, stratify_by_column=column)
    labels = np.asarray(column_values(dataset, column))
    try:
        train, test = next(stratified_shuffle_split_generate_indices(
            labels, n_train, n_test, rng=np.random.default_rng(seed)))
    except Exception as exc:
        raise ValueError(str(exc)) from exc
    return DatasetDict({"train": dataset.select(train), "test": dataset.select(test)})
