"""fxopt.ir: the program representation passes and backends share (see docs/architecture.md)."""
from fxopt.ir.program import Program

__all__ = ["Program"]
