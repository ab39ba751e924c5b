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
        line(&message_json(m).to_string());
    } else {
        line(&message_line(m));
    }
}

/// A message for people, in one line: `[group] sender: what it says`.
pub(crate) fn message_line(m: &ReceivedMessage) -> String {
    let d = &m.detail;
    let target = d.target.as_deref().map(short).unwrap_or_default();
    let text = m.text.clone().unwrap_or_default();
    let body = match m.kind.as_str() {
        "text" | "call" => text,
        "reply" => format!("(reply to {target}) {text}"),
        "reaction" if d.remove => format!("withdrew {text} from {target}"),
        "reaction" => format!("reacted {text} to {target}"),
        "edit" => format!("(edited {target}) {text}"),
        "delete" => format!("deleted {target}"),
        "read" | "delivered" => format!(
            "{} {}",
            m.kind,
            d.message_ids
                .iter()
                .map(|id| short(id))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "timer" => match d.timer_secs {
            Some(s) if s > 0 => format!("set disappearing messages to {s} s after reading"),
            _ => "turned disappearing messages off".into(),
        },
        "attachment" => match &d.attachment {
            Some(a) => format!(
                "file {} ({} bytes, {}){}{}",
                a.name.as_deref().unwrap_or("attachment"),
                a.size,
                a.media_type,
                a.file
                    .as_deref()
                    .map(|f| format!(" saved as {f}"))
                    .unwrap_or_default(),
                if text.is_empty() {
                    String::new()
                } else {
                    format!(": {text}")
                }
            ),
            None => "<deleted file>".into(),
        },
        other => format!("<{other}>"),
    };
    match &m.group {
        Some(g) => format!("[{g}] {}: {body}", m.from),
        None => format!("{}: {body}", m.from),
    }
}

/// `n` and the noun, singular or plural: `1 message`, `2 messages`.
pub(crate) fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// The first 8 hex digits of a message id, enough for people to tell messages apart.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// One `sync --json` row: the fields every row has, then those of its kind.
pub(crate) fn message_json(m: &ReceivedMessage) -> serde_json::Value {
    let mut value = serde_json::json!({
        "conversation": m.conversation,
        "group": m.group,
        "id": m.id,
        "from": m.from,
        "device": m.device,
        "sent_at": m.sent_at,
        "type": m.kind,
        "text": m.text,
    });
    let d = &m.detail;
    let mut put = |key: &str, v: serde_json::Value| {
        value[key] = v;
    };
    match m.kind.as_str() {
        "reply" => put("reply_to", d.target.clone().into()),
        "reaction" => {
            put("target", d.target.clone().into());
            put("emoji", m.text.clone().into());
            put("remove", d.remove.into());
        }
        "edit" | "delete" => put("target", d.target.clone().into()),
        "read" | "delivered" => put("message_ids", d.message_ids.clone().into()),
        "timer" => put("seconds", d.timer_secs.unwrap_or(0).into()),
        "attachment" => {
            if let Some(a) = &d.attachment {
                put("file", a.file.clone().into());
                put("name", a.name.clone().into());
                put("size", a.size.into());
                put("media_type", a.media_type.clone().into());
            }
        }
        _ => {}
    }
    if d.edited {
        put("edited", true.into());
    }
    if d.deleted {
        put("deleted", true.into());
    }
    if let Some(at) = m.expires_at {
        put("expires_at", at.into());
    }
    value
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

/// How far back history for a new device goes: `the last day`, `the last 90 days`; `None`
/// for none.
pub(crate) fn history_span(days: u32) -> Option<String> {
    match days {
        0 => None,
        1 => Some("the last day".into()),
        n => Some(format!("the last {n} days")),
    }
}
