pub mod plan;
mod reconcile;
pub mod status;

pub use reconcile::{reconcile, token_secret_name, CONTROLLER};
