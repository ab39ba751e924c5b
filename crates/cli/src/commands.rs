//! Each command: open the profile, call the SDK, print the result. Errors come back as one
//! line of text for `main` to print.

use std::path::PathBuf;
use std::time::Duration;

use nightjar_client::{
    Client, ClientOptions, Destination, FollowEvent, FollowOptions, LoginOutcome, Password,
};

use crate::{Cli, Command, GroupCommand};
use crate::{output, progress};

type Outcome = Result<(), String>;

/// How long `approve` waits for the new device to come online and join the conversations.
const APPROVED_DEVICE_WAIT: Duration = Duration::from_secs(15);

/// The profile directory: `--profile`, else `NIGHTJAR_PROFILE`, else `~/.nightjar`, else
/// `./nightjar-profile`.
fn profile_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = flag {
        return dir;
    }
    if let Some(dir) = std::env::var_os("NIGHTJAR_PROFILE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".nightjar"),
        None => PathBuf::from("./nightjar-profile"),
    }
}

/// The password: `NIGHTJAR_PASSWORD`, else a prompt without echo (twice when `confirm`).
fn password(username: &str, confirm: bool) -> Result<Password, String> {
    if let Ok(p) = std::env::var("NIGHTJAR_PASSWORD") {
        return Ok(Password::new(p));
    }
    let first = rpassword::prompt_password(format!("Password for {username}: "))
        .map_err(|e| format!("cannot read the password: {e} (set NIGHTJAR_PASSWORD)"))?;
    if first.is_empty() {
        return Err("the password must not be empty".into());
    }
    if confirm {
        let again = rpassword::prompt_password("Repeat the password: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if again != first {
            return Err("the passwords do not match".into());
        }
    }
    Ok(Password::new(first))
}

/// Opens the profile; only `register` and `login` may create a new one.
fn open(cli_profile: Option<PathBuf>, create: bool) -> Result<Client, String> {
    let dir = profile_dir(cli_profile);
    if !create && !dir.join(nightjar_client::keys::PROFILE_FILE).exists() {
        return Err(format!(
            "no Nightjar profile in {}: run `nightjar register` or `nightjar login` first (or pass --profile)",
            dir.display()
        ));
    }
    let mut client = Client::open(&dir, ClientOptions::default()).map_err(|e| e.to_string())?;
    if let Ok(secs) = std::env::var("NIGHTJAR_MISSING_AFTER") {
        let secs: u64 = secs.trim().parse().map_err(|_| {
            format!("NIGHTJAR_MISSING_AFTER must be a number of seconds, not {secs:?}")
        })?;
        client.set_missing_after(std::time::Duration::from_secs(secs));
    }
    Ok(client)
}

/// Prints what the SDK wants the user to know.
fn notices(client: &mut Client) {
    for n in client.take_notices() {
        output::notice(&n);
    }
}

/// Runs one command.
pub(crate) async fn run(cli: Cli) -> Outcome {
    let Cli { profile, command } = cli;
    match command {
        Command::Server {
            data_dir,
            listen,
            database_url,
            nats_url,
            node_id,
            opaque_key_file,
            kt_key_file,
            kt_interval_ms,
            metrics_listen,
            web_dir,
            turn,
            sfu,
            blobs,
            reports,
        } => {
            let crate::ReportArgs {
                franking_key_file,
                moderator_token_file,
            } = *reports;
            let web_dir = web_dir.or_else(|| {
                let built = std::path::PathBuf::from("web/dist");
                built.join("index.html").is_file().then_some(built)
            });
            let config = nightjar_server::ServerConfig {
                database_url,
                nats_url,
                node_id,
                opaque_key_file,
                kt_key_file,
                franking_key_file,
                moderator_token_file,
                kt_interval: std::time::Duration::from_millis(kt_interval_ms.max(10)),
                metrics_listen: metrics_listen.0,
                web_dir,
                turn: turn_config(*turn)?,
                sfu: sfu_settings(*sfu),
                blobs: blob_settings(*blobs),
                ..nightjar_server::ServerConfig::new(data_dir, listen)
            };
            server(config).await
        }
        Command::Audit {
            server,
            from,
            watch,
            key,
        } => crate::audit::run(&server, from, watch, key.as_deref()).await,
        Command::Moderation { command } => crate::moderation::run(command).await,
        command => {
            let create = matches!(command, Command::Register { .. } | Command::Login { .. });
            let mut client = open(profile, create)?;
            let result = user_command(&mut client, command).await;
            notices(&mut client);
            result
        }
    }
}

/// The TURN relay settings: both the URLs and the secret file, or neither (clap checks the
/// flags; this also covers the environment variables).
fn turn_config(args: crate::TurnArgs) -> Result<Option<nightjar_server::TurnConfig>, String> {
    let crate::TurnArgs {
        turn_urls: urls,
        turn_secret_file: secret_file,
        turn_ttl_secs: ttl_secs,
    } = args;
    let urls: Vec<String> = urls
        .into_iter()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .collect();
    match (urls.is_empty(), secret_file) {
        (true, None) => Ok(None),
        (false, Some(file)) => Ok(Some(nightjar_server::TurnConfig {
            ttl: Duration::from_secs(ttl_secs),
            ..nightjar_server::TurnConfig::new(urls, file)
        })),
        (false, None) => {
            Err("--turn-url needs --turn-secret-file (coturn's static-auth-secret)".into())
        }
        (true, Some(_)) => Err("--turn-secret-file needs at least one --turn-url".into()),
    }
}

/// The SFU settings: none with `--no-sfu`.
fn sfu_settings(args: crate::SfuArgs) -> Option<nightjar_server::SfuSettings> {
    (!args.no_sfu).then(|| nightjar_server::SfuSettings {
        udp: args.sfu_udp,
        public_addr: args.sfu_public_addr,
        ..nightjar_server::SfuSettings::default()
    })
}

/// The blob store's settings: the flags, and the default lifetimes.
fn blob_settings(args: crate::BlobArgs) -> nightjar_server::BlobSettings {
    nightjar_server::BlobSettings {
        store: args.blob_store.filter(|url| !url.trim().is_empty()),
        max_blob_bytes: args.blob_max_bytes,
        quota_bytes: args.blob_quota_bytes,
        part_bytes: args.blob_part_bytes,
        ..nightjar_server::BlobSettings::default()
    }
}

async fn server(config: nightjar_server::ServerConfig) -> Outcome {
    // Server logs go to stderr; `RUST_LOG` overrides the default level. The object store's
    // client notes its retries at `info` with the object's URL, which names a blob (its hash):
    // warnings only.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,object_store=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let storage = match &config.database_url {
        Some(url) => redact_password(url),
        None => format!("SQLite in {}", config.data_dir.display()),
    };
    let nats = config.nats_url.as_deref().map_or_else(String::new, |url| {
        format!(", notifications via {}", redact_password(url))
    });
    let web = config.web_dir.is_some();
    let relay = config.turn.as_ref().map(|turn| turn.urls.join(", "));
    let server = nightjar_server::start(config)
        .await
        .map_err(|e| format!("server: {e}"))?;
    // Printed once bound, with the real ports (`--listen 127.0.0.1:0` picks a free one).
    let metrics = server.metrics_addr().map_or_else(
        || "metrics off".to_owned(),
        |addr| format!("metrics on http://{addr}/metrics"),
    );
    eprintln!(
        "nightjar server: data in {storage}{nats}, listening on http://{} ({metrics}; Ctrl-C to stop)",
        server.local_addr()
    );
    eprintln!(
        "nightjar server: {} http://{}/ in a browser",
        if web {
            "web app: open"
        } else {
            "the web app is not built (scripts/build-web.sh); API at"
        },
        server.local_addr()
    );
    if let Some(urls) = relay {
        eprintln!("nightjar server: calls may relay through {urls}");
    }
    match server.sfu() {
        Some(sfu) if sfu.advertised_addr() == sfu.local_addr() => eprintln!(
            "nightjar server: group calls (SFU) on udp {}",
            sfu.local_addr()
        ),
        Some(sfu) => eprintln!(
            "nightjar server: group calls (SFU) on udp {}, reached at {}",
            sfu.local_addr(),
            sfu.advertised_addr()
        ),
        None => eprintln!("nightjar server: group calls off (--no-sfu)"),
    }
    server
        .serve_until(nightjar_server::shutdown_signal())
        .await
        .map_err(|e| format!("server: {e}"))
}

/// The URL with any password (user information or a `password` query parameter) replaced by
/// `***`, for printing.
fn redact_password(url: &str) -> String {
    let (url, query) = url
        .split_once('?')
        .map_or((url, None), |(u, q)| (u, Some(q)));
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest
                .split_once('/')
                .map_or((rest, None), |(a, p)| (a, Some(p)));
            let authority = match authority.rsplit_once('@') {
                Some((credentials, host)) => match credentials.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => authority.to_owned(),
                },
                None => authority.to_owned(),
            };
            match path {
                Some(path) => format!("{scheme}://{authority}/{path}"),
                None => format!("{scheme}://{authority}"),
            }
        }
        None => url.to_owned(),
    };
    if let Some(query) = query {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&redacted.join("&"));
    }
    out
}

/// Fetches the history the approving device sent, if it waits (with a progress bar), and
/// says what came in. A failure that may pass is only a notice: the next command tries again.
pub(crate) async fn import_history(client: &mut Client) -> Result<(), String> {
    if !client.has_pending_history().map_err(|e| e.to_string())? {
        return Ok(());
    }
    let mut bar = progress::Bar::new();
    let imported = client.import_history(&mut |p| bar.update(p)).await;
    bar.finish();
    match imported {
        Ok(Some(i)) => output::notice(&format!(
            "history from the approving device: {} in {} (`nightjar history` shows them)",
            output::count(i.messages, "message", "messages"),
            output::count(i.conversations, "conversation", "conversations")
        )),
        Ok(None) => {}
        Err(e) => output::notice(&format!(
            "could not fetch the history from the approving device now ({e}); the next \
             command tries again"
        )),
    }
    notices(client);
    Ok(())
}

async fn user_command(client: &mut Client, command: Command) -> Outcome {
    let e = |e: nightjar_client::Error| e.to_string();
    match command {
        Command::Server { .. } | Command::Audit { .. } | Command::Moderation { .. } => Ok(()),
        Command::Register { server, username } => {
            let password = password(&username, true)?;
            client
                .register(&server, &username, &password)
                .await
                .map_err(e)?;
            output::line(&format!(
                "registered {username} on {server}; this device is {}",
                client.device_id().unwrap_or_default()
            ));
            Ok(())
        }
        Command::Login {
            server,
            username,
            timeout,
            no_wait,
        } => {
            if client.has_device() && client.username().as_deref() == Some(username.as_str()) {
                // A known device signs in with its own key, no password (and so whatever the
                // password limits say).
                client.sign_in_with_device_key(&server).await.map_err(e)?;
                if client.is_pending().map_err(e)? {
                    let code = client.approval_code().map_err(e)?;
                    output::line(&format!("  nightjar approve {code}"));
                    output::line(&format!("approval code: {code}"));
                } else {
                    output::line(&format!("logged in as {username} (with this device's key)"));
                }
                return Ok(());
            }
            let password = password(&username, false)?;
            match client
                .login(&server, &username, &password)
                .await
                .map_err(e)?
            {
                LoginOutcome::Reauthenticated => {
                    output::line(&format!("logged in as {username}"));
                    Ok(())
                }
                LoginOutcome::Pending { code, device_id } => {
                    output::line(&format!(
                        "This device ({device_id}) waits for approval. On a device logged in as {username}, run:"
                    ));
                    output::line(&format!("  nightjar approve {code}"));
                    output::line(&format!("approval code: {code}"));
                    if no_wait {
                        return Ok(());
                    }
                    client
                        .wait_for_approval(Duration::from_secs(timeout))
                        .await
                        .map_err(e)?;
                    output::line("approved: this device is now active");
                    import_history(client).await
                }
            }
        }
        Command::Devices => {
            let me = client.device_id().unwrap_or_default();
            for d in client.devices().await.map_err(e)? {
                let status = match d.status {
                    nightjar_api::DeviceStatus::Active => "active",
                    nightjar_api::DeviceStatus::Pending => "pending",
                };
                let current = if d.current || d.device_id == me {
                    "  (this device)"
                } else {
                    ""
                };
                output::line(&format!(
                    "{}  {status:<7}  added {}  last seen {}{current}",
                    d.device_id,
                    time(d.created_at_ms),
                    day(d.last_seen_ms)
                ));
            }
            Ok(())
        }
        Command::Approve { code } => {
            let mut bar = progress::Bar::new();
            let approved = client.approve(&code, &mut |p| bar.update(p)).await;
            bar.finish();
            let device = approved.map_err(e)?;
            let days = client.history_days().map_err(e)?;
            output::line(&format!(
                "approved device {device}; it gets {}",
                output::history_span(days)
                    .map_or_else(|| "no history".into(), |span| format!("{span} of history"))
            ));
            // The new device is usually waiting in `login`: it comes online within seconds.
            let joined = client
                .add_approved_devices(APPROVED_DEVICE_WAIT)
                .await
                .map_err(e)?;
            notices(client);
            output::line(if joined {
                "the new device is in all your conversations"
            } else {
                "the new device joins your conversations once it is online and a device of \
                 yours syncs"
            });
            Ok(())
        }
        Command::RemoveDevice { id } => {
            client.remove_device(&id).await.map_err(e)?;
            output::line(&format!("removed device {id}"));
            Ok(())
        }
        Command::Send {
            group,
            file,
            to,
            text,
        } => {
            let args: Vec<String> = to.into_iter().chain(text).collect();
            let outcome = match (file, group, args.as_slice()) {
                (Some(file), group, args) => {
                    let (to, caption) = match (group, args) {
                        (Some(g), []) => (Destination::Group(g), None),
                        (Some(g), [caption]) => (Destination::Group(g), Some(caption.as_str())),
                        (None, [user]) => (Destination::User(user.clone()), None),
                        (None, [user, caption]) => {
                            (Destination::User(user.clone()), Some(caption.as_str()))
                        }
                        _ => {
                            return Err(
                                "give USERNAME --file PATH (or --group GROUP --file PATH)".into()
                            );
                        }
                    };
                    let mut bar = progress::Bar::new();
                    let outcome = client
                        .send_file(&to, &file, caption, &mut |p| bar.update(p))
                        .await;
                    bar.finish();
                    outcome.map_err(e)?
                }
                (None, Some(group), [text]) => client.send_group(&group, text).await.map_err(e)?,
                (None, None, [user, text]) => client.send_direct(user, text).await.map_err(e)?,
                (None, Some(_), _) => return Err("with --group, give only the TEXT".into()),
                (None, None, _) => {
                    return Err("give USERNAME and TEXT (or --group GROUP TEXT)".into());
                }
            };
            if outcome.delivered {
                output::line(&format!(
                    "sent (conversation {}, message {})",
                    outcome.conversation, outcome.message_id
                ));
            } else {
                output::line(&format!(
                    "queued (conversation {}, message {})",
                    outcome.conversation, outcome.message_id
                ));
                output::notice(&format!(
                    "not delivered yet: {}; the next command will retry",
                    outcome.queued_because.unwrap_or_default()
                ));
            }
            Ok(())
        }
        Command::Group { command } => group(client, command).await,
        Command::Sync {
            json,
            follow,
            save_dir,
        } => {
            import_history(client).await?;
            let mut report = client.sync().await.map_err(e)?;
            let mut bar = progress::Bar::new();
            let saved = client
                .save_attachments(&mut report.messages, save_dir.as_deref(), &mut |p| {
                    bar.update(p);
                })
                .await;
            bar.finish();
            saved.map_err(e)?;
            notices(client);
            for m in &report.messages {
                output::message(m, json);
            }
            if let Some(secs) = follow {
                // Files that arrive while following are saved as they come, where `sync`
                // saves them.
                let options = FollowOptions {
                    duration: Duration::from_secs(secs),
                    save_files: Some(save_dir.unwrap_or_else(|| client.default_files_dir())),
                };
                client
                    .follow(&options, |event| match event {
                        FollowEvent::Message(m) => output::message(m, json),
                        FollowEvent::Notice(n) => output::notice(n),
                    })
                    .await
                    .map_err(e)?;
            }
            Ok(())
        }
        Command::SafetyNumber { username } => {
            let (number, changed) = client.safety_number(&username).await.map_err(e)?;
            let me = client.username().unwrap_or_default();
            output::line(&format!("Safety number of {me} and {username}:"));
            output::line(&number.grouped());
            output::line(&output::qr(&number.qr_payload())?);
            if client.is_verified(&username).map_err(e)? {
                output::line(&format!("{username}: verified"));
            } else {
                output::line(&format!(
                    "{username}: not verified (after comparing, run `nightjar verify {username}`)"
                ));
            }
            if let Some(new) = changed {
                output::notice(&format!(
                    "{username} presents a NEW identity key; the safety number with it would be {}. Verify it with {username} before `nightjar trust {username}`",
                    new.grouped()
                ));
            }
            Ok(())
        }
        Command::Trust { username } => {
            client.trust(&username).await.map_err(e)?;
            output::line(&format!("now trusting the new identity key of {username}"));
            Ok(())
        }
        Command::Status => {
            let status = client.status().await.map_err(e)?;
            output::status(&status);
            Ok(())
        }
        Command::Outbox { retry, drop } => {
            if retry {
                let n = client.retry_refused().await.map_err(e)?;
                output::line(&format!("refused entries sent again: {n}"));
            }
            if drop {
                let n = client.drop_refused().map_err(e)?;
                output::line(&format!("refused entries dropped: {n}"));
            }
            let rows = client.outbox().map_err(e)?;
            if rows.is_empty() {
                output::line("the outbox is empty");
            }
            for row in rows {
                let state = match &row.refused {
                    Some(reason) => format!("refused: {reason}"),
                    None if row.attempts > 0 => {
                        format!("waiting ({} failed attempts)", row.attempts)
                    }
                    None => "waiting".to_owned(),
                };
                output::line(&format!(
                    "{}  {:<8}  conversation {}  {state}",
                    row.seq,
                    row.item.label(),
                    row.conversation
                ));
            }
            Ok(())
        }
        Command::Sessions { revoke_others } => {
            if revoke_others {
                let revoked = client.revoke_other_sessions().await.map_err(e)?;
                output::line(&format!("revoked {revoked} other session(s)"));
            }
            for s in client.sessions().await.map_err(e)? {
                let status = match s.status {
                    nightjar_api::DeviceStatus::Active => "active",
                    nightjar_api::DeviceStatus::Pending => "pending",
                };
                let current = if s.current { "  (this session)" } else { "" };
                output::line(&format!(
                    "{}  {status:<7}  signed in {}  last seen {}  expires {}{current}",
                    s.device_id,
                    time(s.created_at_ms),
                    day(s.last_seen_ms),
                    time(s.expires_at_ms)
                ));
            }
            Ok(())
        }
        Command::Verify { username } => {
            client.verify(&username).await.map_err(e)?;
            output::line(&format!(
                "marked the identity key of {username} as verified"
            ));
            Ok(())
        }
        Command::Consent(command) => crate::consent::run(client, command).await,
        Command::Messages(command) => crate::messages::run(client, command).await,
    }
}

async fn group(client: &mut Client, command: GroupCommand) -> Outcome {
    let e = |e: nightjar_client::Error| e.to_string();
    match command {
        GroupCommand::Create { name, members } => {
            let id = client.create_group(&name, &members).await.map_err(e)?;
            output::line(&format!("created group {name} (conversation {id})"));
        }
        GroupCommand::Add { group, username } => {
            client.add_to_group(&group, &username).await.map_err(e)?;
            output::line(&format!("added {username} to {group}"));
        }
        GroupCommand::Remove { group, username } => {
            client
                .remove_from_group(&group, &username)
                .await
                .map_err(e)?;
            output::line(&format!("removed {username} from {group}"));
        }
        GroupCommand::Leave { group } => {
            client.leave_group(&group).await.map_err(e)?;
            output::line(&format!(
                "left {group}: the other members' next commit takes this account out"
            ));
        }
    }
    Ok(())
}

/// A UTC timestamp `YYYY-MM-DD HH:MM` from milliseconds since the Unix epoch.
/// The date of `ms` (the server keeps only the day a device was last seen).
fn day(ms: u64) -> String {
    time(ms).split(' ').next().unwrap_or_default().to_owned()
}

pub(crate) fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::{redact_password, time};

    #[test]
    fn printed_urls_hide_passwords() {
        assert_eq!(
            redact_password("postgres://app:s3cret@db:5432/nightjar"),
            "postgres://app:***@db:5432/nightjar"
        );
        assert_eq!(
            redact_password("postgres://app@127.0.0.1/test"),
            "postgres://app@127.0.0.1/test"
        );
        assert_eq!(redact_password("postgres://u:p@h"), "postgres://u:***@h");
        assert_eq!(redact_password("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(
            redact_password("postgres://db/nightjar?user=app&password=s3cret&sslmode=require"),
            "postgres://db/nightjar?user=app&password=***&sslmode=require"
        );
        assert_eq!(
            redact_password("nats://bot:tok3n@nats:4222"),
            "nats://bot:***@nats:4222"
        );
    }

    #[test]
    fn utc_time() {
        assert_eq!(time(0), "1970-01-01 00:00");
        assert_eq!(time(1_700_000_000_000), "2023-11-14 22:13");
    }
}
