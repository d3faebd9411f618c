"""The generic report the pass manager writes for every pass application."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class PassReport:
    """One pass application: what ran, whether it changed anything, its effect and cost, verification.

    FLOPs and bytes are totals over the graph from the cost model, evaluated at the example inputs' sizes
    (symbolic totals are in ``flops_expr`` when shapes are dynamic).
    """

    index: int
    name: str
    spec: str
    status: str  # "ran", "skipped" (bisect limit)
    modified: bool = False
    nodes_before: int = 0
    nodes_after: int = 0
    flops_before: int = 0
    flops_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    verified: str = "off"  # "ok", "off", "unchanged", "failed"
    details: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def to_json(self) -> dict:
        """The report as a JSON-able dict."""
        return asdict(self)
