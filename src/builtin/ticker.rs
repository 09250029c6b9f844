//! `ticker`: logs a message every `interval`. Config: `{interval: "5s", message: "tick"}`.

use std::time::Duration;

use hsu_module::{async_trait, ModuleConfig, ModuleContext, ModuleError, ModuleInfo, WorkerModule};

/// Logs `message` and a counter every `interval` while running.
#[derive(Debug, Default)]
pub struct TickerModule {
    interval: Duration,
    message: String,
}

impl TickerModule {
    /// Checks a `config:` section as `initialize` reads it.
    ///
    /// # Errors
    /// `ModuleError::Config` naming the field.
    pub fn validate(config: &ModuleConfig) -> Result<(), ModuleError> {
        Self::read_config(config).map(drop)
    }

    fn read_config(config: &ModuleConfig) -> Result<(Duration, String), ModuleError> {
        let interval: String = config.get_or("interval", "5s".to_string())?;
        let interval = hsu_actors::config::duration::parse(&interval)
            .map_err(|e| ModuleError::Config(format!("`interval`: {e}")))?;
        if interval.is_zero() {
            return Err(ModuleError::Config(
                "`interval`: must be greater than 0s".into(),
            ));
        }
        Ok((interval, config.get_or("message", "tick".to_string())?))
    }
}

#[async_trait]
impl WorkerModule for TickerModule {
    async fn initialize(
        &mut self,
        _: &ModuleContext,
        config: &ModuleConfig,
    ) -> Result<(), ModuleError> {
        (self.interval, self.message) = Self::read_config(config)?;
        Ok(())
    }

    async fn start(&mut self, ctx: &ModuleContext) -> Result<(), ModuleError> {
        let cancel = ctx.cancellation();
        let (interval, message) = (self.interval, self.message.clone());
        ctx.spawn("ticker", async move {
            let mut timer = tokio::time::interval(interval);
            timer.tick().await;
            for count in 1u64.. {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = timer.tick() => tracing::info!(count, "{message}"),
                }
            }
            Ok(())
        });
        Ok(())
    }

    fn info(&self) -> ModuleInfo {
        ModuleInfo::new("ticker", env!("CARGO_PKG_VERSION"))
            .description("logs a message on an interval")
            .author("hsu")
    }
}
