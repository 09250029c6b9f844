//! `hsu-test-module`: the scripted test module (`tests/test-module`) as an integrated worker
//! process, so tests can run the same module natively, as a plugin and as a process.
//!
//! The module's source is included, not depended on: a `[[bin]]` of `hsu` cannot use the
//! dev-dependency, and the test module must not become a dependency of the `hsu` library.

#[allow(dead_code)] // the tests use all of it, this binary only the module
#[path = "../test-module/src/lib.rs"]
mod test_module;

fn main() -> std::process::ExitCode {
    hsu_module::run_process(|| test_module::TestModule::new(Default::default()))
}
