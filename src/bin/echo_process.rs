//! `hsu-echo`: the built-in `echo` module hosted in a process of its own, as an integrated
//! worker. The master starts it with `type: process, process_type: integrated`; the module
//! code is the same one that `module_name: echo` runs inside the master.

fn main() -> std::process::ExitCode {
    hsu_module::run_process(echo_module::EchoModule::default)
}
