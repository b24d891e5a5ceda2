"""tidelog.protocols (see docs/architecture.md)."""
