//! Shell completions and man pages generated from the command line definition, so that they never
//! disagree with `--help`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManpagesArgs {
    /// Directory for safeclaw-agent.1 and one page per subcommand (safeclaw-agent-policy-check.1, ...).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = crate::cli::Cli::command();
    clap_complete::generate(args.shell, &mut command, "safeclaw-agent", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

pub fn manpages(args: ManpagesArgs) -> anyhow::Result<ExitCode> {
    for path in write_manpages(&args.out)? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a page per command (hidden ones left out) into `dir`; returns their paths.
pub fn write_manpages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, command) in pages() {
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page).context("cannot render a man page")?;
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Each visible command with its page name (`safeclaw-agent-policy-check`), named as clap_mangen
/// refers to subcommand pages in SEE ALSO.
pub fn pages() -> Vec<(String, clap::Command)> {
    let mut root = crate::cli::Cli::command();
    root.build();
    let mut pages = Vec::new();
    collect(root, "safeclaw-agent".to_owned(), &mut pages);
    pages
}

fn collect(command: clap::Command, name: String, pages: &mut Vec<(String, clap::Command)>) {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
        collect(sub.clone(), format!("{name}-{}", sub.get_name()), pages);
    }
    pages.push((name.clone(), command.name(name)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page of every command names its description and every option `--help` shows.
    #[test]
    fn help_and_man_pages_agree() {
        let pages = pages();
        assert!(pages.iter().any(|(name, _)| name == "safeclaw-agent-policy-check"), "no policy check page");
        for (name, mut command) in pages {
            let mut page = Vec::new();
            clap_mangen::Man::new(command.clone()).render(&mut page).unwrap();
            let page = String::from_utf8(page).unwrap().replace("\\-", "-");
            let words = |text: &str| -> String {
                let text =
                    text.replace("\\*(Aq", "'").replace("\\fB", "").replace("\\fR", "").replace("\\fI", "");
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            };
            let page_words = words(&page);
            let help = command.render_long_help().to_string();
            if let Some(about) = command.get_about() {
                let about = about.to_string();
                assert!(help.contains(&about) && page_words.contains(&words(&about)), "{name}: {about}");
            }
            // clap's own --help and --version read the same everywhere.
            let own = |arg: &&clap::Arg| {
                !arg.is_hide_set() && !["help", "version"].contains(&arg.get_id().as_str())
            };
            for arg in command.get_arguments().filter(own) {
                if let Some(long) = arg.get_long() {
                    let flag = format!("--{long}");
                    assert!(help.contains(&flag), "{name}: --help lacks {flag}");
                    assert!(page.contains(&flag), "{name}: the man page lacks {flag}:\n{page}");
                }
                if let Some(text) = arg.get_help() {
                    let first = words(text.to_string().lines().next().unwrap_or_default());
                    assert!(page_words.contains(&first), "{name}: the man page lacks {first:?}:\n{page}");
                }
            }
        }
    }

    #[test]
    fn completions_cover_every_subcommand() {
        let mut command = crate::cli::Cli::command();
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut command, "safeclaw-agent", &mut out);
        let bash = String::from_utf8(out).unwrap();
        for sub in ["run", "doctor", "policy", "audit", "exec", "init", "stop"] {
            assert!(bash.contains(sub), "bash completion lacks {sub}");
        }
    }
}
