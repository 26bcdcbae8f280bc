//! Kernel addresses from /proc/kallsyms: the sequence counters `file_open`'s memo checks for renames
//! and mount changes (`PathSequences`).
use safeclaw_common::PathSequences;

/// Where the kernel lists its symbols.
const KALLSYMS: &str = "/proc/kallsyms";

/// The addresses of `rename_lock` and `mount_lock` on this kernel. Their sequence count is the first
/// word of a `seqlock_t` in every configuration (`seqcount_t.sequence`, first in each wrapper).
/// Unknown addresses stay 0, which turns the memo off: every open then resolves its path in full.
pub fn path_sequences() -> PathSequences {
    match std::fs::read_to_string(KALLSYMS) {
        Ok(text) => {
            let found = path_sequences_in(&text);
            if found.rename_lock == 0 || found.mount_lock == 0 {
                tracing::warn!(
                    "{KALLSYMS} does not show the addresses of rename_lock and mount_lock (kernel.kptr_restrict?): \
                     repeated opens are still counted, but each resolves its path in full"
                );
            }
            found
        }
        Err(error) => {
            tracing::warn!(
                "cannot read {KALLSYMS} ({error}): repeated opens each resolve their path in full"
            );
            PathSequences::default()
        }
    }
}

/// The two addresses in a kallsyms text: lines `ADDRESS TYPE NAME [MODULE]`, data symbols (`d`, `D`,
/// `b`, `B`) of the kernel itself only. A symbol listed twice, or with address 0 (hidden), counts as
/// unknown. Only the lines holding a name are parsed: the text has some 150,000 lines, and every
/// daemon start reads it.
fn path_sequences_in(text: &str) -> PathSequences {
    let address_of = |name: &str| {
        let mut found = None;
        for at in memchr::memmem::find_iter(text.as_bytes(), name.as_bytes()) {
            let start = text[..at].rfind('\n').map_or(0, |newline| newline + 1);
            let end = text[at..].find('\n').map_or(text.len(), |newline| at + newline);
            let Some(address) = kernel_data_symbol(&text[start..end], name) else { continue };
            if found.replace(address).is_some() {
                return 0;
            }
        }
        found.unwrap_or(0)
    };
    PathSequences { rename_lock: address_of("rename_lock"), mount_lock: address_of("mount_lock") }
}

/// The address on kallsyms `line` if it lists `name` as a data symbol of the kernel itself.
fn kernel_data_symbol(line: &str, name: &str) -> Option<u64> {
    let mut fields = line.split_ascii_whitespace();
    let (Some(address), Some(kind), Some(symbol), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    if symbol != name || !matches!(kind, "d" | "D" | "b" | "B") {
        return None;
    }
    u64::from_str_radix(address, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_addresses_of_the_kernel_itself() {
        let text = "ffffffff81000000 T _text\n\
                    ffffffff82a0c0c0 D rename_lock\n\
                    ffffffffc0001000 d mount_lock\t[some_module]\n\
                    ffffffff82a0c140 D mount_lock\n\
                    ffffffff81234560 t rename_lock_helper\n";
        assert_eq!(
            path_sequences_in(text),
            PathSequences { rename_lock: 0xffff_ffff_82a0_c0c0, mount_lock: 0xffff_ffff_82a0_c140 }
        );
    }

    #[test]
    fn hidden_missing_ambiguous_or_malformed_addresses_are_unknown() {
        let hidden = "0000000000000000 D rename_lock\n0000000000000000 D mount_lock\n";
        assert_eq!(path_sequences_in(hidden), PathSequences::default());
        assert_eq!(path_sequences_in(""), PathSequences::default());
        let twice =
            "ffffffff82a0c0c0 D rename_lock\nffffffff82a0d0c0 d rename_lock\nffffffff82a0c140 D mount_lock\n";
        assert_eq!(
            path_sequences_in(twice),
            PathSequences { rename_lock: 0, mount_lock: 0xffff_ffff_82a0_c140 }
        );
        let malformed = "zzzz D rename_lock\nffffffff82a0c140 T mount_lock\nffffffff82a0c0c0\n";
        assert_eq!(path_sequences_in(malformed), PathSequences::default());
    }
}
