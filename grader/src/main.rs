//! The `grader` binary: see `grader --help` and the README.

#[tokio::main]
async fn main() {
    let code = grader::cli::main().await;
    std::process::exit(code);
}
