"""Evaluate stage: long-tail metrics from logits, results files and plots."""

from synaug.evaluate.metrics import evaluate, per_class_table, summary_table, write_results
from synaug.evaluate.plots import plot_confusion_matrix, plot_per_class_accuracy

__all__ = [
    "evaluate",
    "per_class_table",
    "plot_confusion_matrix",
    "plot_per_class_accuracy",
    "summary_table",
    "write_results",
]
