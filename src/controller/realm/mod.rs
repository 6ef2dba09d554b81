pub mod plan;
mod reconcile;

pub use reconcile::*;
