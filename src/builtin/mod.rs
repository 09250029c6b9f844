//! Native modules that ship with `hsu`, so a new user sees real services at once: `echo`, a
//! small HTTP service on 127.0.0.1, and `ticker`, which logs on an interval. They are also
//! examples of writing a [`WorkerModule`](hsu_module::WorkerModule).

mod ticker;

pub use echo_module::EchoModule;
pub use ticker::TickerModule;

use actix::Addr;
use hsu_actors::{MasterActor, MasterError, RegisterNativeModuleFactory};

/// Names under which [`register`] installs the built-in factories.
pub const NAMES: [&str; 2] = ["echo", "ticker"];

/// The built-in factories, each with its `config:` check, under [`NAMES`].
pub fn factories() -> Vec<RegisterNativeModuleFactory> {
    vec![
        RegisterNativeModuleFactory::new("echo", || Box::new(EchoModule::default()))
            .with_validate(EchoModule::validate),
        RegisterNativeModuleFactory::new("ticker", || Box::new(TickerModule::default()))
            .with_validate(TickerModule::validate),
    ]
}

/// Registers the built-in modules with `master` under [`NAMES`].
///
/// # Errors
/// If a name is already taken, or the master is gone.
pub async fn register(master: &Addr<MasterActor>) -> Result<(), MasterError> {
    for msg in factories() {
        let name = msg.name.clone();
        master
            .send(msg)
            .await
            .map_err(|_| MasterError::ShuttingDown { id: name })??;
    }
    Ok(())
}
