"""fxopt.ir: the program representation passes and backends share (see docs/architecture.md)."""
from fxopt.ir import ops  # noqa: F401 - registers torch.ops.fxopt.* (saved graphs may use them)
from fxopt.ir.program import Program

__all__ = ["Program"]
