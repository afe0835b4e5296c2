//! Backstop's PostgreSQL side: the client tools ([`pg`]), the dump job
//! ([`dump`]) and restore into a branch database ([`restore`]).

pub mod dump;
pub mod pg;
pub mod restore;
