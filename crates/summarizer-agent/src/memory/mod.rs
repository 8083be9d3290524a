//! The structured memory every backend writes into: items with their
//! provenance and dates, the eviction log, token budgets and counting.
//! Backends decide *what* to remember; this module decides what fits and
//! renders the three text layers from the items.

pub(crate) mod budget;
pub(crate) mod state;
pub(crate) mod temporal;
pub(crate) mod text;
pub mod tokens;
