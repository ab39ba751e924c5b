//! The message-request commands: `requests`, `accept`, `block`, `unblock` and `report` (of a
//! message, or of an account).

use clap::Subcommand;
use nightjar_client::Client;

use crate::output;

/// Commands about who may message this account.
#[derive(Debug, Subcommand)]
pub(crate) enum ConsentCommand {
    /// List pending message requests: accounts you have not accepted that messaged you (their
    /// messages are held back from `sync` until you accept them).
    Requests {
        /// Print one JSON object per request (from, conversation, group, messages, preview).
        #[arg(long)]
        json: bool,
    },
    /// Accept an account: its held messages show on the next `sync`, and the server delivers
    /// its messages without the message-request limit.
    Accept {
        /// The account.
        username: String,
    },
    /// Block an account: the server refuses its messages to you (its changes to groups you
    /// share still arrive, so the groups keep working).
    Block {
        /// The account.
        username: String,
    },
    /// Unblock an account: it is a stranger again, whose new messages arrive as a request.
    Unblock {
        /// The account.
        username: String,
    },
    /// Report a message, or an account, to the server operator. `report MESSAGE_ID` (32 hex
    /// digits, from `sync --json`) reveals that one message to the operator with the proof
    /// that its sender sent exactly this content (message franking; nothing else is
    /// revealed). `report USERNAME` reports the account and blocks it: the report holds who
    /// reported whom, when, your 1:1 conversation with them, and --reason if given, never
    /// message content. A message id found in this profile's history is a message.
    Report {
        /// The message id (32 hex digits), or the account.
        #[arg(value_name = "MESSAGE_ID|USERNAME")]
        target: String,
        /// Why, in your own words (at most 1,000 characters).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

/// Runs one message-request command.
pub(crate) async fn run(client: &mut Client, command: ConsentCommand) -> Result<(), String> {
    let e = |e: nightjar_client::Error| e.to_string();
    match command {
        ConsentCommand::Requests { json } => {
            let requests = client.requests().await.map_err(e)?;
            if requests.is_empty() && !json {
                output::line("no message requests");
            }
            for r in requests {
                if json {
                    output::line(&serde_json::to_string(&r).map_err(|e| e.to_string())?);
                    continue;
                }
                let place = match &r.group {
                    Some(g) => format!("group {g}"),
                    None => format!("conversation {}", r.conversation),
                };
                let preview = r
                    .preview
                    .as_deref()
                    .map(|p| format!(": \"{p}\""))
                    .unwrap_or_default();
                output::line(&format!(
                    "{} ({place}): {} message{}{preview}",
                    r.from,
                    r.messages,
                    if r.messages == 1 { "" } else { "s" }
                ));
            }
            if !json {
                output::notice("accept with `nightjar accept USER`, or `nightjar block USER`");
            }
        }
        ConsentCommand::Accept { username } => {
            client.accept(&username).await.map_err(e)?;
            output::line(&format!(
                "accepted {username}; their messages show on `nightjar sync`"
            ));
        }
        ConsentCommand::Block { username } => {
            client.block(&username).await.map_err(e)?;
            output::line(&format!("blocked {username}"));
        }
        ConsentCommand::Unblock { username } => {
            client.unblock(&username).await.map_err(e)?;
            output::line(&format!(
                "unblocked {username}; their new messages arrive as a message request"
            ));
        }
        ConsentCommand::Report { target, reason } => {
            if client.names_message(&target).map_err(e)? {
                let from = client.find_message(&target).map_err(e)?.from;
                let report = client
                    .report_message(&target, reason.as_deref())
                    .await
                    .map_err(e)?;
                output::line(&format!(
                    "reported message {} from {from} (report {report}); the server verified \
                     that {from} sent it",
                    target.trim().to_ascii_lowercase()
                ));
                output::notice(&format!("to stop their messages, `nightjar block {from}`"));
            } else {
                client
                    .report_account(&target, reason.as_deref())
                    .await
                    .map_err(e)?;
                output::line(&format!("reported and blocked {target}"));
            }
        }
    }
    Ok(())
}
