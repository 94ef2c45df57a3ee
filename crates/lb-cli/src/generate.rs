//! What `lb` prints about itself for installation: shell completion scripts
//! (`lb completions SHELL`, clap_complete) and the manual page (`lb man`, clap_mangen). Both
//! are generated from the same clap definition as `--help`, so they cannot miss a flag.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::Args;

/// Writes the completion script for `shell` to stdout.
pub(crate) fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "lb", &mut script);
    emit(&script)
}

/// Writes the manual page, in roff, to stdout.
pub(crate) fn man_page() -> ExitCode {
    let mut page = Vec::new();
    match clap_mangen::Man::new(Args::command()).render(&mut page) {
        Ok(()) => emit(&page),
        Err(e) => {
            err!("lb: cannot render the manual page: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `bytes` to stdout; a closed stdout (`lb man | head`) is not an error worth a word.
fn emit(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            err!("lb: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}
