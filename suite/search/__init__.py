"""``python -m suite.search``: a hyper-parameter search scored with strictly nested selection.

Modules: ``cli`` (arguments) → ``run`` (pre-flight, Ray, datasets, summary, page) → ``driver``
(rounds, confirmation, records of one dataset) over ``studies`` (Optuna: one study per fold,
deterministic rounds), ``tune_rounds`` (Ray Tune trials of a round; final seeds and baselines as
Ray tasks) and ``trial`` (the trainable: a slice of tasks). Selection itself: ``suite.selection``.
"""


def main(argv=None) -> int:
    from .cli import main as cli_main

    return cli_main(argv)
