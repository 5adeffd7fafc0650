//! One module per user-facing operation. Each takes the [`Repository`]
//! and an options struct, and returns a result value; none prints.
//!
//! [`Repository`]: crate::Repository

pub mod backup;
pub mod browse;
pub mod check;
pub mod commit;
pub mod copy;
pub mod diff;
pub mod find;
pub mod forget;
pub mod keys;
pub(crate) mod pack_table;
pub mod prune;
pub(crate) mod prune_plan;
pub mod prune_protocol;
pub mod repair;
pub mod repair_packs;
pub mod restore;
pub mod retention;
pub mod stats;
pub mod tag;
pub mod tar;
pub mod tree_store;
pub mod tree_walk;
