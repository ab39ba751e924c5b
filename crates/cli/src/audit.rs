//! `nightjar audit`: a third-party audit of a server's key-transparency directory.

use std::time::Duration;

use nightjar_api::B64;
use nightjar_client::audit::{AuditOutcome, Auditor};
use nightjar_core::transparency::RootKey;

use crate::output;

/// How long `--watch` waits between rounds.
const WATCH_EVERY: Duration = Duration::from_secs(2);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints the verdict of one round; `Err` for a failed directory.
fn verdict(server: &str, root_key: &RootKey, outcome: &AuditOutcome) -> Result<(), String> {
    match outcome {
        Ok(r) => {
            output::line(&format!(
                "ok: {server} directory is append-only from epoch {} to {} ({} proofs verified; \
                 root {}…, root key {})",
                r.from,
                r.to,
                r.proofs,
                &hex(&r.root)[..16],
                B64::encode(&root_key.0)
            ));
            Ok(())
        }
        Err(failure) => {
            // AKD's messages may span lines; the verdict is one.
            let reason = failure.to_string();
            let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
            output::line(&format!("FAILED: {server} directory: {reason}"));
            Err("the directory failed the audit".into())
        }
    }
}

/// Runs `nightjar audit`.
pub(crate) async fn run(
    server: &str,
    from: Option<u64>,
    watch: bool,
    key: Option<&str>,
) -> Result<(), String> {
    let pinned = key
        .map(|k| {
            B64::decode(k)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(RootKey)
                .ok_or_else(|| format!("--key must be a 32-byte key in base64url, got {k}"))
        })
        .transpose()?;
    let (mut auditor, mismatch) = Auditor::connect(server, pinned)
        .await
        .map_err(|e| e.to_string())?;
    let root_key = auditor.keys().root_key;
    if let Some(failure) = mismatch {
        return verdict(server, &root_key, &Err(failure));
    }
    let outcome = auditor.audit(from).await.map_err(|e| e.to_string())?;
    verdict(server, &root_key, &outcome)?;
    if !watch {
        return Ok(());
    }
    let mut last = outcome.map(|r| r.to).unwrap_or_default();
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        match auditor.audit(None).await {
            Ok(outcome) => {
                let to = outcome.as_ref().map(|r| r.to).unwrap_or(u64::MAX);
                if to != last {
                    verdict(server, &root_key, &outcome)?;
                    last = to;
                }
            }
            // The server being away is not a finding; try again next round.
            Err(e) => output::notice(&format!("audit round failed: {e}")),
        }
    }
}
