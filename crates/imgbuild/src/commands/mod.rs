//! One module per subcommand: each reads its arguments, calls the library, prints.

pub mod build;
pub mod cache;
pub mod index;
pub mod inspect;
pub mod lock;
pub mod login;
pub mod push;
