"""Synthetic survey generator: the embedded default data of the app, notebooks and tests."""

from labelcore.data.synth.population import make_population, observe_labels

__all__ = ["make_population", "observe_labels"]
