//! Reads the guest's serial console: passes the command's output through, hides boot noise but not kernel
//! trouble, and finds init's start and exit markers.

/// How init.sh starts the line that names a step that failed.
pub const INIT_ERROR: &str = "safeclaw-vm: error:";

/// Substrings of console lines that mean the kernel or init is in trouble; shown even outside the command.
const TROUBLE: [&str; 9] = [
    "Kernel panic",
    "Oops",
    "BUG:",
    "WARNING:",
    "Call Trace:",
    "RIP:",
    "general protection fault",
    "segfault",
    INIT_ERROR,
];

#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Init is about to run the command.
    Started,
    /// Init reported the command's exit status.
    Exited(i32),
}

/// What to do with one console line.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub show: bool,
    pub event: Option<Event>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Booting,
    Running,
    Finished,
}

pub struct Console {
    start_marker: String,
    exit_marker: String,
    show_everything: bool,
    phase: Phase,
    /// Set by the first trouble line outside the command: the kernel dump that follows is shown whole.
    in_trouble: bool,
    /// Console lines before the command started, to explain a failed boot.
    pub boot_log: Vec<String>,
    /// The command's output.
    pub transcript: Vec<String>,
}

impl Console {
    pub fn new(nonce: &str, show_everything: bool) -> Self {
        Self {
            start_marker: format!("safeclaw-vm-start {nonce}"),
            exit_marker: format!("safeclaw-vm-exit {nonce} "),
            show_everything,
            phase: Phase::Booting,
            in_trouble: false,
            boot_log: Vec::new(),
            transcript: Vec::new(),
        }
    }

    pub fn started(&self) -> bool {
        self.phase != Phase::Booting
    }

    pub fn line(&mut self, line: &str) -> Verdict {
        if self.phase == Phase::Booting && line == self.start_marker {
            self.phase = Phase::Running;
            return Verdict { show: false, event: Some(Event::Started) };
        }
        if self.phase == Phase::Running {
            if let Some(status) = line.strip_prefix(&self.exit_marker).and_then(|s| s.parse().ok()) {
                self.phase = Phase::Finished;
                return Verdict { show: false, event: Some(Event::Exited(status)) };
            }
            self.transcript.push(line.to_owned());
            return Verdict { show: true, event: None };
        }
        if self.phase == Phase::Booting {
            self.boot_log.push(line.to_owned());
        }
        self.in_trouble |= TROUBLE.iter().any(|pattern| line.contains(pattern));
        Verdict { show: self.show_everything || self.in_trouble, event: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Verdict = Verdict { show: false, event: None };
    const SHOWN: Verdict = Verdict { show: true, event: None };

    #[test]
    fn shows_only_the_command_output_between_the_markers() {
        let mut console = Console::new("n1", false);
        assert_eq!(console.line("[    0.51] Run /init as init process"), QUIET);
        assert_eq!(
            console.line("safeclaw-vm-start n1"),
            Verdict { show: false, event: Some(Event::Started) }
        );
        assert_eq!(console.line("6.12.117+deb12-cloud-amd64"), SHOWN);
        assert_eq!(
            console.line("safeclaw-vm-exit n1 3"),
            Verdict { show: false, event: Some(Event::Exited(3)) }
        );
        assert_eq!(console.line("[    9.10] reboot: Power down"), QUIET);
        assert_eq!(console.transcript, ["6.12.117+deb12-cloud-amd64"]);
        assert_eq!(console.boot_log, ["[    0.51] Run /init as init process"]);
    }

    #[test]
    fn markers_with_another_nonce_are_ordinary_output() {
        let mut console = Console::new("n1", false);
        console.line("safeclaw-vm-start n1");
        assert_eq!(console.line("safeclaw-vm-exit n2 0"), SHOWN);
        assert_eq!(console.line("safeclaw-vm-exit n1 oops"), SHOWN, "a status must be a number");
    }

    #[test]
    fn kernel_trouble_outside_the_command_is_shown_with_what_follows() {
        let mut console = Console::new("n1", false);
        assert_eq!(console.line("[    1.00] Kernel panic - not syncing: VFS"), SHOWN);
        assert_eq!(console.line("[    1.00]  dump_stack_lvl+0x4d/0x70"), SHOWN);
        assert!(!console.started());
    }

    #[test]
    fn verbose_shows_the_boot() {
        let mut console = Console::new("n1", true);
        assert_eq!(console.line("[    0.00] Linux version 6.1.0"), SHOWN);
    }
}
