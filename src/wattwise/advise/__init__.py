"""`wattwise advise PATH`: energy smells in PyTorch training and inference code (static, `ast`)."""

from wattwise.advise.rules import RULES, RULES_BY_CODE, Rule
from wattwise.advise.sarif import to_sarif
from wattwise.advise.scan import AdviseResult, Finding, advise

__all__ = ["RULES", "RULES_BY_CODE", "AdviseResult", "Finding", "Rule", "advise", "to_sarif"]
