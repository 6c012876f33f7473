//! The `grader` binary: see `grader --help` and the README.

use grader::runtime::local::{self, supervisor};

fn main() {
    // The supervisor is this binary again (see `supervisor`): it needs no async runtime.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == supervisor::ARG)
    {
        std::process::exit(supervisor::main());
    }
    supervisor::enable();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("grader: cannot start the async runtime: {e}");
            std::process::exit(grader::scoring::exit::INFRASTRUCTURE);
        }
    };
    let code = runtime.block_on(grader::cli::main());
    local::leave_nothing_behind();
    std::process::exit(code);
}
