"""Feedback-guided synthesis: criteria, the guidance hook, the feedback classifier, budgets."""

from synaug.guidance.budgets import budget_plan
from synaug.guidance.classifier import (
    FeedbackClassifier,
    class_gaussians_for,
    fit_class_gaussians,
    load_feedback_classifier,
)
from synaug.guidance.criteria import CRITERIA, ClassGaussians, register_criterion, resolve_criterion
from synaug.guidance.feedback import GRADIENT_PATHS, FeedbackGuidance, feedback_hook

__all__ = [
    "CRITERIA",
    "GRADIENT_PATHS",
    "ClassGaussians",
    "FeedbackClassifier",
    "FeedbackGuidance",
    "budget_plan",
    "class_gaussians_for",
    "feedback_hook",
    "fit_class_gaussians",
    "load_feedback_classifier",
    "register_criterion",
    "resolve_criterion",
]
