"""Studies: random search (or TPE) over a search space on Optuna, and their reports."""
