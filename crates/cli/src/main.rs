//! The `nightjar` command: `nightjar server` runs the server; every other command drives the
//! client SDK from a local encrypted profile (`--profile DIR`, env `NIGHTJAR_PROFILE`, default
//! `~/.nightjar`, or `./nightjar-profile` when there is no home directory).

mod audit;
mod commands;
mod consent;
mod messages;
mod moderation;
mod output;
mod progress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Nightjar: end-to-end encrypted messaging. The server only ever sees ciphertext.
#[derive(Debug, Parser)]
#[command(name = "nightjar", version, propagate_version = true)]
#[command(
    after_help = "Passwords are read from the terminal without echo, or from NIGHTJAR_PASSWORD.\n\
Set NIGHTJAR_KEYRING=off to keep a new profile's database key in a 0600 key file instead of the OS keyring.\n\
Set NIGHTJAR_MISSING_AFTER=SECS to change how long a message the server skipped may stay missing before it is reported (default 600)."
)]
pub(crate) struct Cli {
    /// Profile directory holding this device's encrypted state [env: NIGHTJAR_PROFILE]
    /// [default: ~/.nightjar, or ./nightjar-profile without a home directory]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) profile: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `nightjar server`'s TURN relay flags: the URLs and the secret file come together or not at
/// all (docs/calls.md).
#[derive(Debug, clap::Args)]
pub(crate) struct TurnArgs {
    /// A URL of the TURN relay (coturn) that carries calls when devices cannot connect
    /// directly, e.g. turn:turn.example.org:3478?transport=udp; repeat it for each
    /// transport (comma-separated in the variable). Needs --turn-secret-file.
    #[arg(
        long = "turn-url",
        value_name = "URL",
        env = "NIGHTJAR_TURN_URL",
        value_delimiter = ',',
        requires = "turn_secret_file"
    )]
    pub(crate) turn_urls: Vec<String>,
    /// File holding the relay's static-auth-secret (coturn's use-auth-secret mode), alone
    /// on one line; devices get short-lived credentials made with it from GET
    /// /v1/calls/turn. Needs --turn-url.
    #[arg(
        long,
        value_name = "PATH",
        env = "NIGHTJAR_TURN_SECRET_FILE",
        requires = "turn_urls"
    )]
    pub(crate) turn_secret_file: Option<PathBuf>,
    /// How long a TURN credential is valid, in seconds (60 to 86400): long enough to
    /// start a call, short enough that a copied credential soon opens no new relays.
    #[arg(
        long,
        value_name = "SECS",
        env = "NIGHTJAR_TURN_TTL_SECS",
        default_value_t = 600
    )]
    pub(crate) turn_ttl_secs: u64,
}

/// `nightjar server`'s group-call SFU flags (docs/calls.md).
#[derive(Debug, clap::Args)]
pub(crate) struct SfuArgs {
    /// UDP address of the selective forwarding unit that carries group calls: every
    /// participant's media goes through this one socket. The default is loopback on a free
    /// port (printed at start), for calls on this machine; give 0.0.0.0:PORT (with
    /// --sfu-public-addr) to take calls from elsewhere.
    #[arg(
        long,
        value_name = "ADDR",
        env = "NIGHTJAR_SFU_UDP",
        default_value = "127.0.0.1:0"
    )]
    pub(crate) sfu_udp: SocketAddr,
    /// The address clients send group-call media to (the SFU's one ICE candidate): needed
    /// when --sfu-udp is 0.0.0.0 or behind NAT or a port forward, e.g. 203.0.113.7:3479.
    #[arg(long, value_name = "ADDR", env = "NIGHTJAR_SFU_PUBLIC_ADDR")]
    pub(crate) sfu_public_addr: Option<SocketAddr>,
    /// Run no SFU: POST /v1/calls/{conversation}/sfu answers 404 not_configured and group
    /// calls are off.
    #[arg(long, env = "NIGHTJAR_NO_SFU", conflicts_with = "sfu_public_addr")]
    pub(crate) no_sfu: bool,
}

/// `nightjar server`'s attachment flags: where the blob store keeps attachments' ciphertext,
/// and its limits (docs/attachments.md).
#[derive(Debug, clap::Args)]
pub(crate) struct BlobArgs {
    /// Where attachments' ciphertext is kept: file:///ABSOLUTE/PATH, or s3://BUCKET in an
    /// S3-compatible store (Garage in production) whose endpoint, region and keys come from
    /// the AWS_* environment variables (AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP=true for plain http) [default: DATA_DIR/blobs].
    #[arg(long, value_name = "URL", env = "NIGHTJAR_BLOB_STORE")]
    pub(crate) blob_store: Option<String>,
    /// The largest attachment (blob) accepted, in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        env = "NIGHTJAR_BLOB_MAX_BYTES",
        default_value_t = 3 << 30
    )]
    pub(crate) blob_max_bytes: u64,
    /// What one account's attachments may take at once, in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        env = "NIGHTJAR_BLOB_QUOTA_BYTES",
        default_value_t = 10 << 30
    )]
    pub(crate) blob_quota_bytes: u64,
    /// The size of an attachment's upload parts (one object and one request each), in bytes
    /// (at most 64 MiB).
    #[arg(
        long,
        value_name = "BYTES",
        env = "NIGHTJAR_BLOB_PART_BYTES",
        default_value_t = 4 << 20
    )]
    pub(crate) blob_part_bytes: u64,
}

/// `nightjar server`'s message-report flags (docs/reporting.md).
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// File holding the message-franking key, which stamps every message so that its
    /// recipients can report it, kept out of the database; every node sharing a database
    /// needs the same file [default: DATA_DIR/franking.key, created with mode 0600].
    #[arg(long, value_name = "PATH", env = "NIGHTJAR_FRANKING_KEY_FILE")]
    pub(crate) franking_key_file: Option<PathBuf>,
    /// File holding the moderators' token for GET /v1/moderation/reports (one word of at
    /// least 16 characters; the server keeps its hash). Without it the moderation routes
    /// answer 404 not_configured.
    #[arg(long, value_name = "PATH", env = "NIGHTJAR_MODERATOR_TOKEN_FILE")]
    pub(crate) moderator_token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a Nightjar server (SQLite in the data directory; Ctrl-C stops it gracefully).
    Server {
        /// Directory for the server's database.
        #[arg(long, value_name = "DIR", default_value = "./nightjar-data")]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Database instead of SQLite in the data directory: `postgres://user@host/db` lets
        /// any number of server nodes share it, or `sqlite://PATH`.
        #[arg(
            long,
            value_name = "URL",
            env = "NIGHTJAR_DATABASE_URL",
            hide_env_values = true
        )]
        database_url: Option<String>,
        /// NATS server through which nodes sharing a PostgreSQL database announce new mail,
        /// e.g. nats://127.0.0.1:4222 (without it, notifications stay in this process).
        #[arg(
            long,
            value_name = "URL",
            env = "NIGHTJAR_NATS_URL",
            hide_env_values = true
        )]
        nats_url: Option<String>,
        /// This node's name in logs and on NATS [default: a random one].
        #[arg(long, value_name = "NAME", env = "NIGHTJAR_NODE_ID")]
        node_id: Option<String>,
        /// File holding the OPAQUE server setup (OPRF seed and key-exchange key), kept out of
        /// the database; every node sharing a database needs the same file
        /// [default: DATA_DIR/opaque-server-setup.key, created with mode 0600].
        #[arg(long, value_name = "PATH", env = "NIGHTJAR_OPAQUE_KEY_FILE")]
        opaque_key_file: Option<PathBuf>,
        /// File holding the key-transparency directory's secrets (the VRF key and the key
        /// that signs epoch roots), kept out of the database; every node sharing a database
        /// needs the same file [default: DATA_DIR/directory.key, created with mode 0600].
        #[arg(long, value_name = "PATH", env = "NIGHTJAR_KT_KEY_FILE")]
        kt_key_file: Option<PathBuf>,
        /// How often the key-transparency directory publishes a new epoch when accounts'
        /// keys or devices changed, in milliseconds.
        #[arg(
            long,
            value_name = "MS",
            env = "NIGHTJAR_KT_INTERVAL_MS",
            default_value_t = 2000
        )]
        kt_interval_ms: u64,
        /// Where Prometheus metrics (GET /metrics) are served: a listener of their own, never
        /// the public one. Loopback on a free port by default (the address is printed at
        /// start); give a fixed address for a scraper, e.g. 127.0.0.1:9464, or `off`.
        #[arg(
            long,
            value_name = "ADDR",
            env = "NIGHTJAR_METRICS_LISTEN",
            default_value = "127.0.0.1:0",
            value_parser = metrics_listen
        )]
        metrics_listen: MetricsListen,
        /// The web app's built assets, served at / (build them with scripts/build-web.sh)
        /// [default: web/dist if it exists].
        #[arg(long, value_name = "DIR", env = "NIGHTJAR_WEB_DIR")]
        web_dir: Option<PathBuf>,
        /// The TURN relay calls fall back to.
        #[command(flatten)]
        turn: Box<TurnArgs>,
        /// The SFU group calls go through.
        #[command(flatten)]
        sfu: Box<SfuArgs>,
        /// Where attachments are kept.
        #[command(flatten)]
        blobs: Box<BlobArgs>,
        /// Message reports: the franking key and the moderators' token.
        #[command(flatten)]
        reports: Box<ReportArgs>,
    },
    /// Create an account on a server, with this profile as its first device.
    Register {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long, value_name = "URL")]
        server: String,
        /// Username: 3-32 characters of a-z, 0-9 and _.
        username: String,
    },
    /// Log in on a new device (prints the approval code and waits for approval), or renew
    /// the session of this profile's device.
    Login {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long, value_name = "URL")]
        server: String,
        /// The account's username.
        username: String,
        /// How long to wait for approval, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout: u64,
        /// Print the approval code and return without waiting (the next command finishes
        /// the link once approved).
        #[arg(long)]
        no_wait: bool,
    },
    /// List this account's devices.
    Devices,
    /// Approve a new device of this account by the code it printed.
    Approve {
        /// The approval code shown by `nightjar login` on the new device
        /// (XXXXX-XXXXX-XXXXX-XXXXX).
        code: String,
    },
    /// Remove (revoke) another device of this account.
    RemoveDevice {
        /// The device id (16 hex digits, see `nightjar devices`).
        id: String,
    },
    /// Send a text message: `send USERNAME TEXT` (1:1; the conversation is created on first
    /// use) or `send --group GROUP TEXT`.
    Send {
        /// Send to this group (name or conversation id) instead of a user.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// Send this file (encrypted on this device, uploaded resumably: sending the same
        /// file again after an interruption sends only what is missing); a TEXT becomes its
        /// caption.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// The account to send to (with --group: the TEXT).
        #[arg(value_name = "USERNAME", allow_hyphen_values = true)]
        to: Option<String>,
        /// The message (with --file: the file's caption, optional).
        #[arg(value_name = "TEXT", allow_hyphen_values = true)]
        text: Option<String>,
    },
    /// Manage groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Send what is queued, then fetch, decrypt and print new messages.
    Sync {
        /// Print one JSON object per message (conversation, group, id, from, device, sent_at,
        /// type, text, and the fields of its type: reply_to, target, emoji, message_ids,
        /// seconds, file, name, size, media_type, ...).
        #[arg(long)]
        json: bool,
        /// Then stay connected to the push stream for this many seconds, printing messages
        /// as they arrive.
        #[arg(long, value_name = "SECS")]
        follow: Option<u64>,
        /// Save received files here [default: files/ in the profile directory].
        #[arg(long, value_name = "DIR")]
        save_dir: Option<PathBuf>,
    },
    /// Show the safety number shared with another account (compare it with them, in person or
    /// by scanning the QR code).
    SafetyNumber {
        /// The other account.
        username: String,
    },
    /// Accept a changed identity key of another account after verifying the new safety number.
    Trust {
        /// The other account.
        username: String,
    },
    /// Show this profile: server, account, device, key storage, conversations, outbox, key
    /// packages.
    Status,
    /// Show what waits in the outbox; entries the server refused show its reason and are
    /// not sent again until you say so.
    Outbox {
        /// Send the refused entries again (after the cause is gone: you were accepted,
        /// unblocked, ...).
        #[arg(long, conflicts_with = "drop")]
        retry: bool,
        /// Discard the refused entries.
        #[arg(long)]
        drop: bool,
    },
    /// List this account's sessions (device, status, last seen; this one marked).
    Sessions {
        /// Revoke every session of the account except this one (other devices sign in again
        /// with their device keys; a password alone gets no session on them).
        #[arg(long)]
        revoke_others: bool,
    },
    /// Mark another account's identity key as verified, after comparing `nightjar
    /// safety-number USERNAME` with them. The mark lapses if their key changes.
    Verify {
        /// The other account.
        username: String,
    },
    /// Audit a server's key-transparency directory, as a third party with no account: check
    /// that every epoch's root is signed by the directory key and that each epoch only
    /// added to the one before (AKD append-only proofs). Prints a one-line verdict; exits
    /// non-zero if the directory fails.
    Audit {
        /// Server URL, e.g. https://chat.example
        #[arg(long, value_name = "URL")]
        server: String,
        /// Start at this epoch instead of the first (its root is taken as signed).
        #[arg(long, value_name = "EPOCH")]
        from: Option<u64>,
        /// Keep auditing as new epochs appear (every few seconds) until interrupted.
        #[arg(long)]
        watch: bool,
        /// The directory's root key (base64url) as printed by an earlier audit: fail if the
        /// server now signs with another.
        #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
        key: Option<String>,
    },
    /// For the operator's moderators: read verified message reports (`moderation reports`)
    /// and mark them reviewed, with the server's moderator token.
    Moderation {
        #[command(subcommand)]
        command: moderation::ModerationCommand,
    },
    /// Message requests: `requests`, `accept`, `block`, `unblock`, `report`.
    #[command(flatten)]
    Consent(consent::ConsentCommand),
    /// About earlier messages and conversations: `reply`, `react`, `edit`, `delete`,
    /// `timer`, `history`, `settings`.
    #[command(flatten)]
    Messages(messages::MessageCommand),
}

/// The `--metrics-listen` value: an address, or `off` (no metrics listener).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MetricsListen(pub(crate) Option<SocketAddr>);

fn metrics_listen(value: &str) -> Result<MetricsListen, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(MetricsListen(None));
    }
    value
        .parse()
        .map(|addr| MetricsListen(Some(addr)))
        .map_err(|_| format!("expected ADDR:PORT (e.g. 127.0.0.1:9464) or off, got {value}"))
}

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a group with these accounts (and all of your devices).
    Create {
        /// The group's name.
        name: String,
        /// Accounts to add.
        #[arg(required = true, value_name = "USERNAME")]
        members: Vec<String>,
    },
    /// Add an account to a group.
    Add {
        /// Group name or conversation id.
        group: String,
        /// The account to add.
        username: String,
    },
    /// Remove an account from a group.
    Remove {
        /// Group name or conversation id.
        group: String,
        /// The account to remove.
        username: String,
    },
    /// Leave a group: every device of this account goes.
    Leave {
        /// Group name or conversation id.
        group: String,
    },
}

/// mimalloc instead of the system allocator: about 10 % more messages per second through the
/// server under load for about 6 % more memory per idle connection (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Usage errors as one line too; the full usage is one `--help` away.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            output::error_line(&format!(
                "{} (see `nightjar --help`)",
                first.join(" ").trim_start_matches("error:").trim()
            ));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::error_line(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            output::error_line(&message);
            ExitCode::FAILURE
        }
    }
}
