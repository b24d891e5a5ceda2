"""tidelog.api (see docs/architecture.md)."""
