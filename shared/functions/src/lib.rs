//! Backstop's Lambda edge: the [`lambda::Function`] trait and its runners
//! (Lambda Runtime API, a local event file, a local HTTP endpoint), replies
//! to Function URL requests ([`http`]), and the two functions wired from the
//! environment: [`replicator::ReplicatorFunction`] and
//! [`retention::RetentionFunction`], whose results are printed as CloudWatch
//! Embedded Metric Format records ([`metrics`]).

pub mod http;
pub mod lambda;
pub mod metrics;
pub mod replicator;
pub mod retention;
