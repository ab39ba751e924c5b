//! Printing: one-line errors and notices on stderr, messages, status and QR codes on stdout.

use std::io::Write as _;

use nightjar_client::{ReceivedMessage, Status};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

/// Prints `message` as one line on stderr, prefixed `error: `.
pub(crate) fn error_line(message: &str) {
    eprintln!("error: {}", one_line(message));
}

/// Prints a notice for the user on stderr.
pub(crate) fn notice(message: &str) {
    eprintln!("note: {}", one_line(message));
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Prints a line on stdout and flushes (other processes may be reading it live).
pub(crate) fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Prints a received message, as JSON or for people.
pub(crate) fn message(m: &ReceivedMessage, json: bool) {
    if json {
        let value = serde_json::json!({
            "conversation": m.conversation,
            "group": m.group,
            "id": m.id,
            "from": m.from,
            "device": m.device,
            "sent_at": m.sent_at,
            "type": m.kind,
            "text": m.text,
        });
        line(&value.to_string());
        return;
    }
    let text = m.text.clone().unwrap_or_else(|| format!("<{}>", m.kind));
    match &m.group {
        Some(g) => line(&format!("[{g}] {}: {text}", m.from)),
        None => line(&format!("{}: {text}", m.from)),
    }
}

/// Renders `payload` as a QR code of Unicode half blocks.
pub(crate) fn qr(payload: &[u8]) -> Result<String, String> {
    let code = QrCode::new(payload).map_err(|e| format!("cannot render the QR code: {e}"))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Prints the status summary.
pub(crate) fn status(s: &Status) {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    line(&format!("profile:        {}", s.profile_dir.display()));
    line(&format!("server:         {}", or_none(&s.server)));
    line(&format!("username:       {}", or_none(&s.username)));
    line(&format!("device id:      {}", or_none(&s.device_id)));
    line(&format!("device status:  {}", or_none(&s.device_status)));
    line(&format!("key storage:    {}", s.key_storage));
    line(&format!("conversations:  {}", s.conversations));
    if s.refused > 0 {
        line(&format!(
            "outbox:         {} ({} refused by the server: see `nightjar outbox`)",
            s.outbox, s.refused
        ));
    } else {
        line(&format!("outbox:         {}", s.outbox));
    }
    line(&format!("messages:       {}", s.messages));
    let kps = match (s.key_packages, &s.key_packages_error) {
        (Some(n), _) => n.to_string(),
        (None, Some(e)) => format!("unknown ({})", one_line(e)),
        (None, None) => "-".into(),
    };
    line(&format!("key packages:   {kps}"));
    if !s.changed_identities.is_empty() {
        line(&format!(
            "identity changed (unverified): {}",
            s.changed_identities.join(", ")
        ));
    }
    if !s.verified.is_empty() {
        line(&format!("verified:       {}", s.verified.join(", ")));
    }
}
