//! The frameworks a report can be for and their control catalogues, shipped as data files
//! (`safeclaw-agent/catalogues/*.json`) that name their source and version.
use serde::{Deserialize, Serialize};

/// A compliance framework `audit report` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Framework {
    Soc2,
    Hipaa,
    Iso27001,
    #[value(name = "pci-dss")]
    PciDss,
}

impl Framework {
    /// The name used on the command line and as the prefix of policy tags (`soc2:CC6.1`).
    pub fn id(self) -> &'static str {
        match self {
            Framework::Soc2 => "soc2",
            Framework::Hipaa => "hipaa",
            Framework::Iso27001 => "iso27001",
            Framework::PciDss => "pci-dss",
        }
    }

    fn data(self) -> &'static str {
        match self {
            Framework::Soc2 => include_str!("../../catalogues/soc2.json"),
            Framework::Hipaa => include_str!("../../catalogues/hipaa.json"),
            Framework::Iso27001 => include_str!("../../catalogues/iso27001.json"),
            Framework::PciDss => include_str!("../../catalogues/pci-dss.json"),
        }
    }

    /// The framework's control catalogue.
    pub fn catalogue(self) -> Catalogue {
        // The files are part of the build and a test parses every one of them.
        serde_json::from_str(self.data()).unwrap_or_else(|e| panic!("catalogue {}: {e}", self.id()))
    }

    /// The control a policy tag names for this framework (`soc2:CC6.1` → `CC6.1`).
    pub fn control_of(self, tag: &str) -> Option<&str> {
        tag.strip_prefix(self.id())?.strip_prefix(':').filter(|c| !c.is_empty())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub framework: String,
    pub name: String,
    pub source: String,
    pub version: String,
    pub controls: Vec<Control>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub id: String,
    pub title: String,
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn every_catalogue_parses_and_names_its_framework_and_source() {
        for framework in Framework::value_variants() {
            let catalogue = framework.catalogue();
            assert_eq!(catalogue.framework, framework.id());
            assert!(!catalogue.source.is_empty() && !catalogue.version.is_empty());
            assert!(catalogue.controls.len() >= 5);
            let mut ids: Vec<_> = catalogue.controls.iter().map(|c| c.id.as_str()).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), catalogue.controls.len(), "{}: duplicate control ids", framework.id());
        }
    }

    #[test]
    fn tags_name_controls_of_their_framework_only() {
        assert_eq!(Framework::Soc2.control_of("soc2:CC6.1"), Some("CC6.1"));
        assert_eq!(Framework::PciDss.control_of("pci-dss:10.2.1"), Some("10.2.1"));
        assert_eq!(Framework::Soc2.control_of("soc2x:CC6.1"), None);
        assert_eq!(Framework::Hipaa.control_of("hipaa:"), None);
        assert_eq!(Framework::Hipaa.control_of("phi"), None);
    }
}
