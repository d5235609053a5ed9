//! Training kinds and their machinery: optimizers and learning-rate schedules.

pub mod lbfgs;
pub mod optim;
pub mod schedule;
mod supervised;

pub use supervised::task_of;

/// Registers every training kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(supervised::Supervised);
}
