//! `cross_entropy`: see docs/ops.md (being filled in).
