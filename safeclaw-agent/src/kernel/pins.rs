//! Pins in bpffs that keep enforcement alive when the daemon dies: the maps (scope, policy, events)
//! and one link per program. A restarted daemon reuses the maps and replaces the links one by one,
//! so there is no moment without enforcement; a deliberate stop removes them all.
use std::path::{Path, PathBuf};

use aya::maps::MapData;
use safeclaw_common::{
    counter, dfa_class, ByteClasses, NetKeyData, NetPrefixValue, PolicyHeader, PortInterval, RepeatEntry,
    RuleEntry, Scope, SessionProfiles, EVENTS_RING_BYTES, MAX_DFA_STATES, MAX_DFA_TRANSITIONS,
    MAX_NET_PREFIXES, MAX_PORT_INTERVALS, MAX_PROFILES, MAX_REPEATS, MAX_RULES, MAX_SESSIONS, POLICY_SLOTS,
};

use super::KernelError;

/// Default pin directory (under the usual bpffs mount).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/safeclaw";

/// A map that outlives the daemon, with the layout this build expects of it.
pub struct PersistentMap {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn map<K, V>(name: &'static str, max_entries: u32) -> PersistentMap {
    PersistentMap {
        name,
        key_size: std::mem::size_of::<K>() as u32,
        value_size: std::mem::size_of::<V>() as u32,
        max_entries,
    }
}

/// Every map whose state must survive a daemon restart (the per-CPU scratch map need not).
pub const PERSISTENT_MAPS: [PersistentMap; 12] = [
    map::<u32, Scope>("SCOPE", 1),
    map::<u32, PolicyHeader>("POLICY", POLICY_SLOTS * MAX_PROFILES),
    map::<u64, SessionProfiles>("SESSION_PROFILES", MAX_SESSIONS),
    map::<u32, RuleEntry>("RULES", POLICY_SLOTS * MAX_RULES),
    map::<u32, ByteClasses>("DFA_CLASSES", POLICY_SLOTS * MAX_PROFILES * dfa_class::COUNT),
    map::<u32, u32>("DFA_TRANS", POLICY_SLOTS * MAX_DFA_TRANSITIONS),
    map::<u32, u32>("DFA_ACCEPT", POLICY_SLOTS * MAX_DFA_STATES),
    // LPM keys carry a 4-byte prefix length before the data.
    PersistentMap {
        name: "NET_PREFIXES",
        key_size: 4 + std::mem::size_of::<NetKeyData>() as u32,
        value_size: std::mem::size_of::<NetPrefixValue>() as u32,
        max_entries: MAX_NET_PREFIXES,
    },
    map::<u32, PortInterval>("PORT_INTERVALS", POLICY_SLOTS * MAX_PORT_INTERVALS),
    map::<u32, u64>("COUNTERS", counter::COUNT),
    // Counted repeats not yet recorded: a restarted daemon records them.
    map::<u64, RepeatEntry>("REPEATS", MAX_REPEATS),
    PersistentMap { name: "EVENTS", key_size: 0, value_size: 0, max_entries: EVENTS_RING_BYTES },
];

/// The pin layout under one directory.
#[derive(Clone, Debug)]
pub struct PinDir {
    pub root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PinDir { root: root.into() }
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    /// The links of the programs loaded with `epoch` (see `Scope::epoch`).
    pub fn links(&self, epoch: u32) -> PathBuf {
        self.root.join("links").join(format!("{epoch:08x}"))
    }

    pub fn link(&self, epoch: u32, program: &str) -> PathBuf {
        self.links(epoch).join(program)
    }

    /// Whether a previous daemon left enforcement pinned here.
    pub fn has_links(&self) -> bool {
        let Ok(epochs) = std::fs::read_dir(self.root.join("links")) else { return false };
        epochs
            .flatten()
            .any(|dir| std::fs::read_dir(dir.path()).is_ok_and(|mut links| links.next().is_some()))
    }

    /// Unpins the links of every epoch but `keep` (their programs detach once nothing holds them).
    pub fn remove_links_except(&self, keep: Option<u32>) -> Result<(), KernelError> {
        let dir = self.root.join("links");
        let keep = keep.map(|epoch| self.links(epoch));
        for epoch in list(&dir)? {
            if Some(&epoch) != keep.as_ref() {
                for link in list(&epoch)? {
                    remove_pin(&link)?;
                }
                remove_dir_if_present(&epoch)?;
            }
        }
        Ok(())
    }

    /// Unpins the links of one epoch.
    pub fn remove_links(&self, epoch: u32) -> Result<(), KernelError> {
        let dir = self.links(epoch);
        for link in list(&dir)? {
            remove_pin(&link)?;
        }
        remove_dir_if_present(&dir)
    }

    /// Creates the (root-only) directory of one epoch's links.
    pub fn create_links(&self, epoch: u32) -> Result<(), KernelError> {
        create_private_dir(&self.links(epoch))
    }

    /// Creates the directories (root-only) on a bpffs mount.
    pub fn create(&self) -> Result<(), KernelError> {
        for dir in [self.root.clone(), self.root.join("maps"), self.root.join("links")] {
            create_private_dir(&dir)?;
        }
        Ok(())
    }

    /// Refuses pinned maps whose layout differs from this build's (another SafeClaw version left
    /// them): reusing them would make the programs read the wrong bytes.
    pub fn check_compatible(&self) -> Result<(), KernelError> {
        for expected in &PERSISTENT_MAPS {
            let path = self.map(expected.name);
            if !path.exists() {
                continue;
            }
            let info = MapData::from_pin(&path)
                .and_then(|m| m.info())
                .map_err(|source| KernelError::Map { map: expected.name, source })?;
            let found = (info.key_size(), info.value_size(), info.max_entries());
            let wanted = (expected.key_size, expected.value_size, expected.max_entries);
            if found != wanted {
                return Err(KernelError::Pins(format!(
                    "pinned map {} has key/value/entries {found:?}, this build needs {wanted:?}: it was left \
                     by another SafeClaw version; run `safeclaw-agent stop` to unload it first",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Removes every pin (links first, which detaches the programs once no fd holds them).
    pub fn remove_all(&self) -> Result<(), KernelError> {
        self.remove_links_except(None)?;
        remove_dir_if_present(&self.root.join("links"))?;
        let maps = self.root.join("maps");
        for map in list(&maps)? {
            remove_pin(&map)?;
        }
        remove_dir_if_present(&maps)?;
        remove_dir_if_present(&self.root)
    }
}

/// The entries of `dir`; none if it does not exist.
fn list(dir: &Path) -> Result<Vec<PathBuf>, KernelError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(KernelError::Pins(format!("cannot list {}: {e}", dir.display()))),
    };
    entries
        .map(|entry| {
            entry
                .map(|e| e.path())
                .map_err(|e| KernelError::Pins(format!("cannot list {}: {e}", dir.display())))
        })
        .collect()
}

fn remove_pin(path: &Path) -> Result<(), KernelError> {
    std::fs::remove_file(path).map_err(|e| KernelError::Pins(format!("cannot unpin {}: {e}", path.display())))
}

fn create_private_dir(dir: &Path) -> Result<(), KernelError> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(KernelError::Pins(format!(
            "cannot create {} (is bpffs mounted at its parent? `mount -t bpf bpf /sys/fs/bpf`): {e}",
            dir.display()
        ))),
    }
}

fn remove_dir_if_present(dir: &Path) -> Result<(), KernelError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(KernelError::Pins(format!("cannot remove {}: {e}", dir.display()))),
    }
}
