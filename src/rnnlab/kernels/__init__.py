"""Fast backends behind the cell contract (see docs/architecture.md)."""
