//! Subcommands of the `plugboard` command that live in modules of their own.

pub(crate) mod plugin;
pub(crate) mod signatures;
