//! The report as a sequence of titled sections of paragraphs and tables, in the order: one layout
//! that the PDF and HTML renderers both draw, so the two always say the same.
use super::aggregate::{Access, Counts, Events, Listing, ReportData, Verdict};

pub struct Document {
    pub title: String,
    /// The title page: framework, period, scope lines, and the verdict.
    pub subtitle: Vec<String>,
    pub verdict: Verdict,
    pub verdict_lines: Vec<String>,
    pub sections: Vec<Section>,
}

pub struct Section {
    pub heading: String,
    pub blocks: Vec<Block>,
}

pub enum Block {
    Paragraph(String),
    /// A table: column headings with their share of the width (in characters), and rows.
    Table {
        columns: Vec<(&'static str, usize)>,
        rows: Vec<Vec<String>>,
    },
}

/// A table of name/value pairs.
fn pairs(rows: Vec<(&str, String)>) -> Block {
    Block::Table {
        columns: vec![("Item", 28), ("Value", 72)],
        rows: rows.into_iter().map(|(k, v)| vec![k.to_string(), v]).collect(),
    }
}

fn counts(title: &'static str, counts: &Counts) -> Block {
    let mut rows: Vec<_> = counts.0.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    Block::Table {
        columns: vec![(title, 80), ("Count", 20)],
        rows: rows.into_iter().map(|(k, n)| vec![k.clone(), n.to_string()]).collect(),
    }
}

fn events(events: &Events, none: &str) -> Vec<Block> {
    if events.total == 0 {
        return vec![Block::Paragraph(none.to_string())];
    }
    let mut blocks = vec![Block::Table {
        columns: vec![("Sequence", 12), ("Time", 25), ("Kind", 24), ("Detail", 39)],
        rows: events
            .shown
            .iter()
            .map(|e| vec![e.sequence.to_string(), e.timestamp.clone(), e.kind.clone(), e.detail.clone()])
            .collect(),
    }];
    if events.total > events.shown.len() as u64 {
        blocks.push(Block::Paragraph(format!(
            "{} more not shown; the JSON report and the log hold all of them.",
            events.total - events.shown.len() as u64
        )));
    }
    blocks
}

fn accesses(listing: &Listing, what: &str, pack_file: &str) -> Vec<Block> {
    let mut blocks = vec![Block::Paragraph(format!("{} {what} in the period.", listing.total))];
    if listing.total == 0 {
        return blocks;
    }
    let row = |a: &Access| {
        vec![
            a.sequence.to_string(),
            a.timestamp.clone(),
            a.action.clone(),
            a.effect.clone(),
            a.target.clone(),
            a.rule.clone().unwrap_or_else(|| "(default)".into()),
        ]
    };
    blocks.push(Block::Table {
        columns: vec![
            ("Sequence", 8),
            ("Time", 21),
            ("Action", 13),
            ("Effect", 6),
            ("Target", 36),
            ("Rule", 16),
        ],
        rows: listing.shown.iter().map(row).collect(),
    });
    let more = listing.total - listing.shown.len() as u64;
    if more > 0 {
        blocks.push(Block::Paragraph(format!(
            "The first {} are shown; {more} more are in the evidence pack ({pack_file}).",
            listing.shown.len()
        )));
    }
    blocks
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or("-".into(), |v| v.to_string())
}

impl Document {
    pub fn of(data: &ReportData) -> Document {
        let scope = &data.scope;
        let v = &data.verification;
        let period = scope.period.as_ref();
        let title = format!("{} compliance report", data.framework.name);
        let subtitle = vec![
            format!(
                "Framework: {} (catalogue: {}, version {})",
                data.framework.name, data.framework.framework, data.framework.version
            ),
            format!(
                "Period: {} ({} to {}, end excluded)",
                period.map_or("-", |p| p.label.as_str()),
                period.map_or("-", |p| p.from.as_str()),
                period.map_or("-", |p| p.until.as_str())
            ),
            format!("Log: {}    Host: {}", or_dash(scope.log_id.as_ref()), scope.host),
            format!("Agent: {}", data.options.agent.as_deref().unwrap_or("all agents")),
            format!("Generated: {} by safeclaw-agent {}", data.generated_at, env!("CARGO_PKG_VERSION")),
        ];
        let mut verdict_lines = vec![match v.verdict {
            Verdict::Passed => "Chain verification: PASSED".to_string(),
            Verdict::Failed => "Chain verification: FAILED - this log is damaged or incomplete".to_string(),
        }];
        if let Some(failure) = &v.failure {
            verdict_lines.push(failure.clone());
        }
        verdict_lines.push(format!(
            "{} entries checked, {} checkpoints, signed through entry {}, against {}.",
            v.entries_checked,
            v.checkpoints,
            or_dash(v.signed_through),
            v.key
        ));
        verdict_lines.push(format!(
            "Attempts in the period: {}; denied: {}; under {} or high/critical rules: {}.",
            data.activity.attempts, data.denials.total, data.framework.framework, data.tagged_access.total
        ));

        let mut sections = Vec::new();
        let position = |p: &Option<super::aggregate::Position>| {
            p.as_ref().map_or("-".into(), |p| format!("{} at {} ({})", p.sequence, p.timestamp, p.hash))
        };
        let mut scope_blocks = vec![pairs(vec![
            ("Host (report made on)", scope.host.clone()),
            ("Log id", or_dash(scope.log_id.as_ref())),
            ("Public key", or_dash(scope.public_key.as_ref())),
            ("Key fingerprint", or_dash(scope.key_fingerprint.as_ref())),
            ("Period", period.map_or("-".into(), |p| format!("{} .. {}", p.from, p.until))),
            ("First entry of the period", position(&scope.first)),
            ("Last entry of the period", position(&scope.last)),
            ("Files", scope.files.join(", ")),
        ])];
        scope_blocks.push(Block::Paragraph(format!(
            "{} policies in force in the period, by hash:",
            scope.policies.len()
        )));
        scope_blocks.push(Block::Table {
            columns: vec![
                ("Policy hash", 40),
                ("Source", 30),
                ("Rules", 6),
                ("Loads (sequence at time)", 24),
            ],
            rows: scope
                .policies
                .iter()
                .map(|p| {
                    vec![
                        p.hash.clone(),
                        or_dash(p.source.as_ref()),
                        or_dash(p.rules),
                        p.loads.iter().map(|(s, t)| format!("{s} at {t}")).collect::<Vec<_>>().join("; "),
                    ]
                })
                .collect(),
        });
        sections.push(Section { heading: "1. Scope".into(), blocks: scope_blocks });

        let mut chain = vec![pairs(vec![
            (
                "Verdict",
                match v.verdict {
                    Verdict::Passed => "PASSED".into(),
                    Verdict::Failed => "FAILED".into(),
                },
            ),
            ("First damage", or_dash(v.failure.as_ref())),
            ("Entries checked", v.entries_checked.to_string()),
            ("Sequence range", format!("{} .. {}", or_dash(v.first_sequence), or_dash(v.last_sequence))),
            ("Files", v.files.to_string()),
            ("Checkpoints verified", v.checkpoints.to_string()),
            ("Signed through entry", or_dash(v.signed_through)),
            ("Key", v.key.clone()),
            (
                "Signed head",
                v.signed_head
                    .as_ref()
                    .map_or("none given".into(), |h| format!("{} entries, {} at {}", h.size, h.head, h.time)),
            ),
            ("Kernel events lost (denied)", v.lost_kernel_events.to_string()),
        ])];
        chain.push(Block::Paragraph(
            "Gaps, lockdowns, kernel sessions, sequence resets and retention deletions in the period:".into(),
        ));
        chain.extend(events(&v.events, "None."));
        if let Some(list) = &v.checkpoint_list {
            chain.push(Block::Paragraph("Checkpoints in the period:".into()));
            chain.extend(events(list, "None."));
        }
        sections.push(Section { heading: "2. Chain verification".into(), blocks: chain });

        let a = &data.activity;
        let mut activity = vec![Block::Paragraph(format!("{} attempts in the period.", a.attempts))];
        if a.unreadable > 0 {
            activity.push(Block::Paragraph(format!(
                "{} entries verified but could not be read by the report.",
                a.unreadable
            )));
        }
        activity.push(counts("Action", &a.by_action));
        activity.push(counts("Effect", &a.by_effect));
        activity.push(counts("Agent", &a.by_agent));
        activity.push(counts("User", &a.by_user));
        activity.push(counts("Session", &a.by_session));
        sections.push(Section { heading: "3. Activity".into(), blocks: activity });

        sections.push(Section {
            heading: "4. Denials".into(),
            blocks: accesses(&data.denials, "denials", "denials.jsonl"),
        });
        let mut tagged = accesses(
            &data.tagged_access,
            &format!(
                "attempts under rules tagged for {} or of severity high or critical",
                data.framework.framework
            ),
            "access.jsonl",
        );
        if let Some(phi) = &data.phi_access {
            tagged.push(Block::Paragraph("Access under rules tagged phi or hipaa:".into()));
            tagged.extend(accesses(phi, "attempts under rules tagged phi or hipaa", "phi-access.jsonl"));
        }
        sections.push(Section { heading: "5. Tagged and high-severity access".into(), blocks: tagged });

        let c = &data.controls;
        let mut controls = vec![Block::Paragraph(format!(
            "Controls of {} {} (source: {}) that the policy's rule tags name, with the rules that implement them \
             and the attempts they decided in the period:",
            data.framework.name, data.framework.version, data.framework.source
        ))];
        controls.push(Block::Table {
            columns: vec![
                ("Control", 14),
                ("Title", 34),
                ("Rules", 22),
                ("Allowed", 10),
                ("Denied", 10),
                ("Audited", 10),
            ],
            rows: c
                .named
                .iter()
                .map(|e| {
                    vec![
                        e.id.clone(),
                        e.title.clone().unwrap_or_else(|| "(not in the catalogue)".into()),
                        e.rules.iter().cloned().collect::<Vec<_>>().join(", "),
                        e.allowed.to_string(),
                        e.denied.to_string(),
                        e.audited.to_string(),
                    ]
                })
                .collect(),
        });
        controls.push(Block::Paragraph(format!(
            "{} controls of the catalogue that no rule names:",
            c.unnamed.len()
        )));
        controls.push(Block::Table {
            columns: vec![("Control", 20), ("Title", 80)],
            rows: c.unnamed.iter().map(|u| vec![u.id.clone(), u.title.clone()]).collect(),
        });
        sections.push(Section { heading: "6. Control mapping".into(), blocks: controls });

        sections.push(Section {
            heading: "7. Exceptions".into(),
            blocks: {
                let mut blocks = vec![Block::Paragraph(
                    "Rejected policy reloads, daemon starts and stops, write failures and recoveries in the period:".into(),
                )];
                blocks.extend(events(&data.exceptions, "None."));
                blocks
            },
        });
        Document { title, subtitle, verdict: v.verdict, verdict_lines, sections }
    }
}
