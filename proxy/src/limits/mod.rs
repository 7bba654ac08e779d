//! Budgets and rate limits: admission before a request is forwarded
//! (reserve an estimate against every applicable limit), settlement after
//! (charge what was used, hand back the rest), and what clients and
//! operators see of it. Counters live in a [`store::CounterStore`].

pub mod estimate;
pub mod pricing;
pub mod store;
pub mod window;
