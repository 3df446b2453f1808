//! `cat`: see docs/ops.md (being filled in).
