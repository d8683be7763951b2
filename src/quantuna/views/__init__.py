"""Optional viewers of a study: optuna-dashboard (:mod:`~quantuna.views.dashboard`) and the
offline HTML/PNG report (:mod:`~quantuna.views.report`). Only the CLI imports them; the layers
below never do."""
