//! The `plugboard` subcommands' flags and what they do, apart from `main.rs`.

pub mod logs;
pub(crate) mod plugin;
pub mod run;
pub(crate) mod signatures;
