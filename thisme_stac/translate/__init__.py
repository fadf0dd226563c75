"""Pure resto -> STAC translation."""
