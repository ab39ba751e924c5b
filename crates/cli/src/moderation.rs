//! `nightjar moderation`: the operator's moderators read verified message reports
//! (docs/reporting.md) with the server's moderator token, no profile needed.

use std::path::Path;

use nightjar_client::api::Api;

use crate::output;

/// Reports asked for per page.
const PAGE: u32 = 500;

/// What moderators do.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ModerationCommand {
    /// List the verified message reports, oldest first, with the reported content.
    Reports {
        /// Server URL, e.g. https://chat.example
        #[arg(long, value_name = "URL")]
        server: String,
        /// File holding the moderator token (the server's --moderator-token-file).
        #[arg(long, value_name = "PATH", env = "NIGHTJAR_MODERATOR_TOKEN_FILE")]
        token_file: std::path::PathBuf,
        /// Only reports not marked reviewed yet.
        #[arg(long)]
        unreviewed: bool,
        /// Print one JSON object per report.
        #[arg(long)]
        json: bool,
    },
    /// Mark a report reviewed.
    Reviewed {
        /// The report's id.
        id: u64,
        /// Server URL, e.g. https://chat.example
        #[arg(long, value_name = "URL")]
        server: String,
        /// File holding the moderator token (the server's --moderator-token-file).
        #[arg(long, value_name = "PATH", env = "NIGHTJAR_MODERATOR_TOKEN_FILE")]
        token_file: std::path::PathBuf,
    },
}

/// An API client bearing the token in `path`.
fn api(server: &str, path: &Path) -> Result<Api, String> {
    let token = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the moderator token file {}: {e}",
            path.display()
        )
    })?;
    let mut api = Api::new(server).map_err(|e| e.to_string())?;
    api.set_token(Some(token.trim().to_owned()));
    Ok(api)
}

/// Runs one moderation command.
pub(crate) async fn run(command: ModerationCommand) -> Result<(), String> {
    let e = |e: nightjar_client::Error| e.to_string();
    match command {
        ModerationCommand::Reports {
            server,
            token_file,
            unreviewed,
            json,
        } => {
            let api = api(&server, &token_file)?;
            let mut after = 0;
            let mut count = 0;
            loop {
                let page = api
                    .moderation_reports(after, PAGE, unreviewed)
                    .await
                    .map_err(e)?;
                let Some(last) = page.reports.last().map(|r| r.id) else {
                    break;
                };
                for r in &page.reports {
                    count += 1;
                    if json {
                        output::line(&serde_json::to_string(r).map_err(|e| e.to_string())?);
                        continue;
                    }
                    let text = r.text.as_deref().unwrap_or("");
                    let reason = r
                        .reason
                        .as_deref()
                        .map(|why| format!(" — reason: {why}"))
                        .unwrap_or_default();
                    let reviewed = if r.reviewed_at_ms.is_some() {
                        " [reviewed]"
                    } else {
                        ""
                    };
                    output::line(&format!(
                        "report {}{reviewed}: {} reported {}/{} in conversation {}: {} \"{text}\"{reason}",
                        r.id,
                        r.reporter,
                        r.sender.username,
                        r.sender.device_id,
                        r.conversation_id,
                        r.content_type,
                    ));
                }
                after = last;
            }
            if count == 0 && !json {
                output::line("no reports");
            }
        }
        ModerationCommand::Reviewed {
            id,
            server,
            token_file,
        } => {
            api(&server, &token_file)?
                .mark_report_reviewed(id)
                .await
                .map_err(e)?;
            output::line(&format!("report {id} marked reviewed"));
        }
    }
    Ok(())
}
