//! The S3 destination against moto's S3 server on loopback (object lock enabled): every sealed segment
//! and the signed head arrive locked with the right retain-until (read back through HeadObject), a
//! delete of a locked version is refused, delivery survives a stalled server and a SIGKILL of the
//! delivering process, the downloaded copy verifies, and `audit verify --against` names the first
//! entry of the host's copy that was changed after upload.
mod destinations_support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use destinations_support::moto::{Moto, BUCKET};
use destinations_support::{wait_for, Deliverer, Workspace};
use safeclaw_agent::audit::segment::LogName;
use safeclaw_agent::audit::signing::AuditKey;

const RETENTION_DAYS: i64 = 7;

fn config(workspace: &Workspace, endpoint: &str) -> PathBuf {
    let path = workspace.dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "audit:\n  checkpoint:\n    interval: 1s\n  rotation:\n    compress: zstd\n  destinations:\n    - type: s3\n      name: vault\n      bucket: {BUCKET}\n      prefix: \"safeclaw/{{{{year}}}}/{{{{month}}}}/{{{{host}}}}/\"\n      objectLock: true\n      retentionMode: COMPLIANCE\n      retentionDays: {RETENTION_DAYS}\n      endpoint: \"{endpoint}\"\n"
        ),
    )
    .unwrap();
    path
}

fn agent(args: &[&str], extra: &[&Path]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_safeclaw-agent")).args(args).args(extra).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn sealed_segments_and_heads_are_locked_verified_and_compared() {
    let Some(mut moto) = Moto::start() else { return };
    let workspace = Workspace::new();
    let config = config(&workspace, &moto.endpoint());
    let writer = workspace.write_in_background(110_000, Duration::from_millis(5));
    let mut deliverer = Deliverer::start(&workspace, &config);
    wait_for("a first segment stored", Duration::from_secs(600), || workspace.status("vault").delivered > 0);
    moto.stall(Duration::from_secs(3));
    wait_for("a later segment", Duration::from_secs(600), || workspace.status("vault").delivered > 30_000);
    moto.kill9_and_restart();
    wait_for("segments after the server's restart", Duration::from_secs(600), || {
        workspace.status("vault").delivered > 60_000
    });
    deliverer.kill9_and_restart();
    writer.join().unwrap();
    let sealed_end = workspace.sealed_end();
    let end = workspace.durable_end();
    assert!(sealed_end > 100_000, "the log did not rotate as expected: {sealed_end}");
    wait_for("every sealed segment", Duration::from_secs(600), || {
        workspace.status("vault").delivered == sealed_end
    });
    let head_name = format!("head-{end:020}.json");
    wait_for("the final head", Duration::from_secs(120), || {
        moto.python(&format!(
            "r = s3.list_objects_v2(Bucket='{BUCKET}')\nprint(any(o['Key'].endswith('{head_name}') for o in r.get('Contents', [])))"
        ))
        .trim()
            == "True"
    });
    deliverer.stop();

    // Every object locked as configured, read back through HeadObject; a delete of a version refused.
    let download = workspace.dir.path().join("download");
    std::fs::create_dir(&download).unwrap();
    let report = moto.python(&format!(
        r#"
keys = all_keys('{BUCKET}')
now = datetime.datetime.now(datetime.timezone.utc)
low, high = now + datetime.timedelta(days={RETENTION_DAYS}, hours=-1), now + datetime.timedelta(days={RETENTION_DAYS}, hours=1)
segments = heads = 0
for key in keys:
    h = s3.head_object(Bucket='{BUCKET}', Key=key)
    assert h['ObjectLockMode'] == 'COMPLIANCE', (key, h)
    assert low <= h['ObjectLockRetainUntilDate'] <= high, (key, h['ObjectLockRetainUntilDate'])
    name = key.rsplit('/', 1)[1]
    if name.startswith('head-'):
        heads += 1
    else:
        segments += 1
        s3.download_file('{BUCKET}', key, '{dir}/' + name)
first = sorted(k for k in keys if not k.rsplit('/', 1)[1].startswith('head-'))[0]
version = s3.head_object(Bucket='{BUCKET}', Key=first)['VersionId']
try:
    s3.delete_object(Bucket='{BUCKET}', Key=first, VersionId=version)
    refused = 'deleted'
except Exception as e:
    refused = e.response['Error']['Code']
print(json.dumps(dict(segments=segments, heads=heads, refused=refused, keys=keys[:3])))
"#,
        dir = download.display()
    ));
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    eprintln!("{report}");
    let rotated = workspace.rotated();
    assert_eq!(report["segments"].as_u64().unwrap() as usize, rotated, "{report}");
    assert!(report["heads"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["refused"], "AccessDenied", "{report}");
    assert!(report["keys"][0].as_str().unwrap().starts_with("safeclaw/20"), "{report}");

    // The downloaded copy verifies with the log's key (each sealed segment ends in a checkpoint).
    let pubkey = AuditKey::load(&workspace.state().join("audit.key")).unwrap().public().to_text();
    let (ok, text) = agent(&["audit", "verify", "--accept", "no-head", "--pubkey", &pubkey], &[&download]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("OK: {sealed_end} entries")), "{text}");

    // The host's copy equals the bucket's.
    let against = |extra: &[&Path]| {
        let head = workspace.state().join("audit.head");
        let active = workspace.active();
        let endpoint = moto.endpoint();
        let url = format!("s3://{BUCKET}/safeclaw/");
        let mut paths: Vec<&Path> = vec![Path::new("--head"), &head];
        paths.extend_from_slice(extra);
        paths.push(&active);
        agent(
            &[
                "audit",
                "verify",
                "--config",
                config.to_str().unwrap(),
                "--against",
                &url,
                "--endpoint",
                &endpoint,
                "--pubkey",
                &pubkey,
            ],
            &paths,
        )
    };
    let (ok, text) = against(&[]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("({sealed_end} entries) equal")), "{text}");

    // The unsealed tail cut and the head rolled back with it (to one the bucket holds): named.
    let head_path = workspace.state().join("audit.head");
    let current_head = std::fs::read(&head_path).unwrap();
    let current_active = std::fs::read(workspace.active()).unwrap();
    let older = moto.python(&format!(
        "r = s3.list_objects_v2(Bucket='{BUCKET}')\nheads = sorted(o['Key'] for o in r['Contents'] if o['Key'].rsplit('/', 1)[1].startswith('head-'))\nprint(s3.get_object(Bucket='{BUCKET}', Key=heads[-2])['Body'].read().decode())"
    ));
    let older_size =
        serde_json::from_str::<serde_json::Value>(older.trim()).unwrap()["size"].as_u64().unwrap();
    assert!(older_size < end);
    std::fs::write(&head_path, older.trim_end().to_owned() + "\n").unwrap();
    let kept: Vec<&str> = std::str::from_utf8(&current_active)
        .unwrap()
        .lines()
        .take(older_size.saturating_sub(sealed_end) as usize)
        .collect();
    std::fs::write(workspace.active(), kept.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let (ok, text) = against(&[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("the host's head covers {older_size} entries"))
            && text.contains("rolled back"),
        "{text}"
    );
    std::fs::write(&head_path, current_head).unwrap();
    std::fs::write(workspace.active(), current_active).unwrap();

    // An entry edited on the host after upload: named.
    let segments = LogName::of_active(&workspace.active()).list().unwrap();
    let second = &segments[1];
    let first_seq = second.first_seq.unwrap();
    let mut plain = String::new();
    safeclaw_agent::audit::segment::open_reader(&second.path, |_| {})
        .unwrap()
        .read_to_string(&mut plain)
        .unwrap();
    let edited = plain.replacen("\"effect\":\"deny\"", "\"effect\":\"allow\"", 1);
    assert_ne!(edited, plain);
    let line = plain.lines().zip(edited.lines()).position(|(a, b)| a != b).unwrap() as u64;
    std::fs::write(&second.path, edited).unwrap();
    let (ok, text) = against(&[]);
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("entry {} differs", first_seq + line)), "{text}");

    // `rotation.archiveTo` alone: its own `archive` destination, the endpoint from the environment.
    let archived = Workspace::new();
    archived.write_in_background(20_000, Duration::ZERO).join().unwrap();
    let archive_config = archived.dir.path().join("config.yaml");
    std::fs::write(&archive_config, format!("audit:\n  rotation:\n    archiveTo: \"s3://{BUCKET}/arch/\"\n"))
        .unwrap();
    let (ok, text) = agent(&["config", "check"], &[&archive_config]);
    assert!(ok && text.contains("rotation.archiveTo: by destination archive"), "{text}");
    std::env::set_var("AWS_ENDPOINT_URL_S3", moto.endpoint());
    let mut deliverer = Deliverer::start(&archived, &archive_config);
    let sealed_end = archived.sealed_end();
    wait_for("the archive", Duration::from_secs(300), || archived.status("archive").delivered == sealed_end);
    deliverer.stop();
    let stored = moto.python(&format!(
        "r = s3.list_objects_v2(Bucket='{BUCKET}', Prefix='arch/')\nprint(sum(1 for o in r['Contents'] if '/head-' not in o['Key']))"
    ));
    let rotated = archived.rotated();
    assert!(rotated >= 2, "{rotated}");
    assert_eq!(stored.trim(), rotated.to_string());
}
