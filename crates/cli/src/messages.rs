//! The commands about earlier messages and conversations: `reply`, `react`, `edit`, `delete`,
//! `timer`, `history` and `settings`. Messages are named by the ids `sync --json` prints.

use clap::Subcommand;
use nightjar_client::{Client, Destination, MAX_TIMER_SECS, SendOutcome};

use crate::output;

/// Commands that refer to an earlier message or set up a conversation.
#[derive(Debug, Subcommand)]
pub(crate) enum MessageCommand {
    /// Answer a message, quoting it: `reply MESSAGE_ID TEXT`.
    Reply {
        /// The message's id (32 hex digits, as `sync --json` prints it).
        message_id: String,
        /// The answer.
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
    /// React to a message with an emoji: `react MESSAGE_ID EMOJI` (`--remove` withdraws it).
    React {
        /// The message's id.
        message_id: String,
        /// The emoji.
        emoji: String,
        /// Withdraw this reaction instead.
        #[arg(long)]
        remove: bool,
    },
    /// Change the text of one of your messages for everyone: `edit MESSAGE_ID TEXT`.
    Edit {
        /// The message's id.
        message_id: String,
        /// The new text.
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
    /// Delete one of your messages for everyone: `delete MESSAGE_ID`.
    Delete {
        /// The message's id.
        message_id: String,
    },
    /// Set a conversation's disappearing-message timer: `timer USER DURATION` or
    /// `timer --group GROUP DURATION`, DURATION like 30s, 5m, 1h, 7d, or `off`. Messages sent
    /// afterwards, by anyone, disappear from every device that long after they were read.
    Timer {
        /// A group (name or conversation id) instead of a user.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// USER DURATION, or just DURATION with --group.
        #[arg(required = true, num_args = 1..=2, value_name = "USER DURATION")]
        args: Vec<String>,
    },
    /// Show or change this device's settings.
    Settings {
        /// Tell senders when you read their messages (`on`, the default, or `off`).
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        read_receipts: Option<bool>,
        /// How many days of history a device this one approves gets (0: none; default 90).
        #[arg(long, value_name = "DAYS")]
        history_days: Option<u32>,
    },
    /// Show earlier messages kept on this device (history from the approving device
    /// included): `history [USER]` or `history --group GROUP`.
    History {
        /// Only the 1:1 conversation with this account.
        #[arg(conflicts_with = "group")]
        user: Option<String>,
        /// Only this group (name or conversation id).
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// At most this many messages (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per message, as `sync --json` prints them.
        #[arg(long)]
        json: bool,
    },
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("on or off".into()),
    }
}

/// Parses a timer duration: `30s`, `5m`, `1h`, `7d`, `2w` (or plain seconds); `off` is `None`.
pub(crate) fn parse_duration(s: &str) -> Result<Option<u32>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || format!("{s} is no duration: give e.g. 30s, 5m, 1h, 7d, or off");
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(scale).ok_or_else(bad)?;
    if secs == 0 || secs > u64::from(MAX_TIMER_SECS) {
        return Err(format!("{s}: the timer is between 1 second and 365 days"));
    }
    Ok(Some(u32::try_from(secs).map_err(|_| bad())?))
}

/// Says a duration the way people write it.
fn describe(secs: u32) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// Runs one message command.
pub(crate) async fn run(client: &mut Client, command: MessageCommand) -> Result<(), String> {
    let e = |e: nightjar_client::Error| e.to_string();
    let (what, outcome) = match command {
        MessageCommand::Reply { message_id, text } => {
            ("reply", client.reply(&message_id, &text).await.map_err(e)?)
        }
        MessageCommand::React {
            message_id,
            emoji,
            remove,
        } => (
            "reaction",
            client.react(&message_id, &emoji, remove).await.map_err(e)?,
        ),
        MessageCommand::Edit { message_id, text } => {
            ("edit", client.edit(&message_id, &text).await.map_err(e)?)
        }
        MessageCommand::Delete { message_id } => {
            ("delete", client.delete(&message_id).await.map_err(e)?)
        }
        MessageCommand::Timer { group, args } => {
            let (to, duration) = match (group, args.as_slice()) {
                (Some(group), [duration]) => (Destination::Group(group), duration),
                (None, [user, duration]) => (Destination::User(user.clone()), duration),
                (Some(_), _) => return Err("with --group, give only the DURATION".into()),
                (None, _) => {
                    return Err("give USER and DURATION (or --group GROUP DURATION)".into());
                }
            };
            let secs = parse_duration(duration)?;
            let outcome = client.set_timer(&to, secs).await.map_err(e)?;
            output::line(&match secs {
                Some(s) => format!(
                    "disappearing messages: {} after reading (conversation {})",
                    describe(s),
                    outcome.conversation
                ),
                None => format!(
                    "disappearing messages: off (conversation {})",
                    outcome.conversation
                ),
            });
            return queued_notice(&outcome);
        }
        MessageCommand::Settings {
            read_receipts,
            history_days,
        } => {
            if let Some(on) = read_receipts {
                client.set_read_receipts(on).map_err(e)?;
            }
            if let Some(days) = history_days {
                client.set_history_days(days).map_err(e)?;
            }
            let on = client.read_receipts().map_err(e)?;
            output::line(&format!("read receipts: {}", if on { "on" } else { "off" }));
            let days = client.history_days().map_err(e)?;
            output::line(&format!(
                "history for new devices: {}",
                output::history_span(days).unwrap_or_else(|| "none".into())
            ));
            return Ok(());
        }
        MessageCommand::History {
            user,
            group,
            limit,
            json,
        } => {
            crate::commands::import_history(client).await?;
            let with = match (user, group) {
                (Some(user), _) => Some(Destination::User(user)),
                (None, Some(group)) => Some(Destination::Group(group)),
                (None, None) => None,
            };
            for m in client.history(with.as_ref(), limit).map_err(e)? {
                if json {
                    output::message(&m, true);
                } else {
                    // When, on the sender's clock: history spans days.
                    output::line(&format!(
                        "{} {}",
                        crate::commands::time(m.sent_at),
                        output::message_line(&m)
                    ));
                }
            }
            return Ok(());
        }
    };
    output::line(&format!(
        "{} {what} (conversation {}, message {})",
        if outcome.delivered { "sent" } else { "queued" },
        outcome.conversation,
        outcome.message_id
    ));
    queued_notice(&outcome)
}

fn queued_notice(outcome: &SendOutcome) -> Result<(), String> {
    if !outcome.delivered {
        output::notice(&format!(
            "not delivered yet: {}; the next command will retry",
            outcome.queued_because.clone().unwrap_or_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_written() {
        assert_eq!(parse_duration("30s"), Ok(Some(30)));
        assert_eq!(parse_duration("5m"), Ok(Some(300)));
        assert_eq!(parse_duration("1h"), Ok(Some(3600)));
        assert_eq!(parse_duration("7d"), Ok(Some(604_800)));
        assert_eq!(parse_duration("2w"), Ok(Some(1_209_600)));
        assert_eq!(parse_duration("45"), Ok(Some(45)));
        assert_eq!(parse_duration("off"), Ok(None));
        assert_eq!(parse_duration("OFF"), Ok(None));
        for bad in [
            "",
            "0s",
            "5x",
            "m",
            "-5m",
            "366d",
            "99999999999999999999s",
            "1.5h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(describe(604_800), "7d");
        assert_eq!(describe(5400), "90m");
        assert_eq!(describe(61), "61s");
    }
}
