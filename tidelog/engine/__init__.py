"""tidelog.engine (see docs/architecture.md)."""
