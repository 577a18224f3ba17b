//! The `plugboard` subcommands' flags and what they do, apart from `main.rs`.

pub mod logs;
pub mod run;
pub(crate) mod plugin;
pub(crate) mod signatures;
