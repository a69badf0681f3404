"""Dense model -> hybrid training model -> exported multiplication-free target (docs/algorithms.md §3-§4, §6).

``analyze`` (plan) -> ``convert`` (rewrite) -> per step ``sample_active_widths`` -> per epoch ``sort_channels`` ->
``recalibrate_bn`` -> ``export`` -> ``audit``. See docs/convert.md.
"""
from __future__ import annotations

from .analysis import analyze
from .audit import AuditEntry, AuditReport, audit
from .bn import recalibrate_bn
from .config import ConvertConfig, augmented_width, make_divisible
from .converter import convert
from .export import export
from .plan import ChannelGroup, ConversionPlan, LayerPlan, get_plan
from .sampling import (
    sample_active_widths,
    set_max_widths,
    set_target_widths,
    set_widths,
)
from .sort import sort_channels

__all__ = [
    "ConvertConfig", "analyze", "convert", "export", "audit", "get_plan", "sort_channels", "recalibrate_bn",
    "sample_active_widths", "set_max_widths", "set_target_widths", "set_widths", "ConversionPlan", "ChannelGroup",
    "LayerPlan", "AuditReport", "AuditEntry", "augmented_width", "make_divisible",
]
