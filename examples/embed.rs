//! Embedding hsu in an actix application: start the master, register a native module factory,
//! add two instances with different configs, query their states, stop them.
//!
//! Run: `cargo run --example embed`

use std::time::Duration;

use hsu::{
    async_trait, AddWorker, GetAllWorkerStates, GetWorkerState, MasterActor, MasterConfig,
    ModuleConfig, ModuleContext, ModuleError, ModuleInfo, RegisterNativeModuleFactory, Shutdown,
    StartWorker, StopWorker, WorkerConfig, WorkerId, WorkerModule,
};

/// A module that greets on an interval; each instance has its own greeting.
#[derive(Default)]
struct Greeter {
    greeting: String,
    every: Duration,
}

#[async_trait]
impl WorkerModule for Greeter {
    async fn initialize(
        &mut self,
        _: &ModuleContext,
        config: &ModuleConfig,
    ) -> Result<(), ModuleError> {
        self.greeting = config.get_or("greeting", "hello".to_string())?;
        self.every = Duration::from_millis(config.get_or("every_ms", 200u64)?);
        Ok(())
    }

    async fn start(&mut self, ctx: &ModuleContext) -> Result<(), ModuleError> {
        let (greeting, every, cancel) = (self.greeting.clone(), self.every, ctx.cancellation());
        let worker = ctx.worker_id().to_string();
        ctx.spawn("greet", async move {
            while tokio::time::timeout(every, cancel.cancelled())
                .await
                .is_err()
            {
                println!("  [{worker}] {greeting}");
            }
            Ok(())
        });
        Ok(())
    }

    fn info(&self) -> ModuleInfo {
        ModuleInfo::new("greeter", "1.0.0").description("greets on an interval")
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let master = MasterActor::launch(MasterConfig::default())?;
    master
        .send(RegisterNativeModuleFactory::new("greeter", || {
            Box::new(Greeter::default())
        }))
        .await??;
    println!("registered native module factory `greeter`");

    for (id, greeting) in [("english", "hello"), ("french", "bonjour")] {
        let config =
            WorkerConfig::native(id, "greeter").with_config(&format!("greeting: {greeting}"));
        // AddWorker answers the validated id: the handle for every later request.
        let id = master.send(AddWorker(config)).await??;
        master.send(StartWorker(id.clone())).await??;
        println!("added and started `{id}` (greeting: {greeting})");
    }
    tokio::time::sleep(Duration::from_millis(450)).await;

    for summary in master.send(GetAllWorkerStates).await? {
        let d = master.send(GetWorkerState(summary.id.clone())).await??;
        println!(
            "{}: state={} kind={:?} path={} module={} v{} uptime={:?}",
            d.id,
            d.state,
            d.deployment,
            d.executable_path,
            d.module.as_ref().map_or("", |m| m.info.name.as_str()),
            d.module.as_ref().map_or("", |m| m.info.version.as_str()),
            d.uptime.unwrap_or_default()
        );
    }

    // An id from text is checked, like every id that comes from outside.
    let english = WorkerId::new("english")?;
    master.send(StopWorker(english.clone())).await??;
    let d = master.send(GetWorkerState(english)).await??;
    println!("stopped `english`: state={}", d.state);
    let report = master.send(Shutdown).await?;
    println!("shutdown stopped {} worker(s)", report.stopped.len());
    Ok(())
}
