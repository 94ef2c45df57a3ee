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

/// Writes the manual page, in roff, to stdout: clap_mangen's sections for `lb` itself, then
/// the subcommands on the same page (clap_mangen would point at an `lb-ctl(1)` page of their
/// own, which no one installs) and the examples with their layout kept.
pub(crate) fn man_page() -> ExitCode {
    let command = Args::command();
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    let rendered = (|| -> std::io::Result<()> {
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        page.extend_from_slice(subcommands_section(&command).as_bytes());
        if let Some(examples) = command.get_after_help() {
            page.extend_from_slice(b".SH EXAMPLES\n.nf\n");
            for line in examples.to_string().lines().skip_while(|l| l.starts_with("Examples")) {
                page.extend_from_slice(format!("{}\n", roff(line)).as_bytes());
            }
            page.extend_from_slice(b".fi\n");
        }
        man.render_version_section(&mut page)
    })();
    match rendered {
        Ok(()) => emit(&page),
        Err(e) => {
            err!("lb: cannot render the manual page: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `COMMANDS`: each subcommand with what it does and its options.
fn subcommands_section(command: &clap::Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("lb {}", sub.get_name());
        out.push_str(&format!(".SS \"{}\"\n", roff(&name)));
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            out.push_str(&format!("{}\n", roff(&about.to_string())));
        }
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set() && a.get_id() != "help") {
            let names = match (arg.get_short(), arg.get_long()) {
                (_, Some(long)) => format!("\\fB\\-\\-{}\\fR", roff(long)),
                (Some(short), None) => format!("\\fB\\-{short}\\fR"),
                (None, None) => String::new(),
            };
            // A switch (`--wait`) has a value name by default, but takes no value.
            let value = match arg.get_action().takes_values() {
                true => arg
                    .get_value_names()
                    .map(|v| v.iter().map(|n| format!("\\fI<{}>\\fR", roff(n))).collect())
                    .unwrap_or_else(Vec::new)
                    .join(" "),
                false => String::new(),
            };
            out.push_str(&format!(".TP\n{}\n", [names, value].join(" ").trim()));
            if let Some(help) = arg.get_long_help().or(arg.get_help()) {
                out.push_str(&format!("{}\n", roff(&help.to_string())));
            }
            if let Some(env) = arg.get_env() {
                out.push_str(&format!("[env: {}]\n", roff(&env.to_string_lossy())));
            }
        }
    }
    out
}

/// `text` as roff prints it: backslashes and hyphens escaped, no line read as a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.starts_with(['.', '\'']) {
        true => format!("\\&{escaped}"),
        false => escaped,
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
