//! The `authgate` command line. Every command goes through [`Core`]; none
//! touches the database directly.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use uuid::Uuid;

use crate::config::{self, Config, LogFormat};
use crate::core::clock::rfc3339;
use crate::core::{ClientMeta, Core, Error, NewUser, Session, SystemClock, User, UserKey};
use crate::store::{self, ConnectOptions};

mod import;
pub mod serve;

#[derive(Debug, Parser)]
#[command(name = "authgate", version, about = "Self-hosted authentication server", long_about = None)]
pub struct Cli {
    /// Config file (TOML). Default: ./authgate.toml when it exists.
    #[arg(
        long,
        short,
        global = true,
        env = "AUTHGATE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve,
    /// Apply database migrations and exit (serve also applies them on start).
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// List and revoke sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The token vault's keys.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// The OpenID provider's ID-token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The OpenID provider's clients (relying parties) kept in the
    /// database; `[clients.<id>]` in the config are listed, not changed.
    #[command(subcommand)]
    Client(Box<ClientCommand>),
    /// Print the OpenAPI document (JSON).
    Openapi,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FactorAction {
    /// Take the TOTP factor, its recovery codes and the passkeys away.
    Remove,
    /// This person must use a second factor, whatever `mfa.required` says
    /// (unless it is `off`).
    Require,
    /// This person follows `mfa.required` again.
    Default,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Language tag such as en or de.
        #[arg(long)]
        locale: Option<String>,
    },
    /// List users (oldest first).
    List {
        #[command(flatten)]
        page: Page,
        #[arg(long)]
        json: bool,
    },
    /// Show one user with identities and live sessions.
    Show {
        /// User id or e-mail address.
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: ends all their sessions at once; no new sign-ins.
    Disable { user: String },
    /// Enable a disabled user.
    Enable { user: String },
    /// Delete a user with identities, sessions and stored provider tokens.
    Delete { user: String },
    /// A user's second factors (TOTP, recovery codes left, passkeys,
    /// whether one is required of them); `remove` takes the TOTP factor,
    /// its recovery codes and the passkeys away (a support case: the
    /// person lost the phone); `require`
    /// makes them use one, `default` lets `mfa.required` decide again.
    /// Changes are audited.
    Factors {
        /// User id or e-mail address.
        user: String,
        #[arg(value_enum)]
        action: Option<FactorAction>,
        #[arg(long)]
        json: bool,
    },
    /// Import users from CSV (header: email,name,locale) or JSON lines
    /// ({"email","name","locale"}). All rows or none; re-running is harmless.
    Import {
        /// The file, or - for standard input.
        file: PathBuf,
        /// Default: from the file extension (.csv, .jsonl, .ndjson, .json).
        #[arg(long, value_enum)]
        format: Option<import::Format>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List live sessions, newest first.
    List {
        /// Only this user's (id or e-mail).
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Revoke one session by its id, or all of a user's.
    Revoke {
        /// Session id (as shown by `session list`).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<Uuid>,
        /// Revoke every session of this user (id or e-mail).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Print a new random key (base64 of 32 bytes) for `vault.keys`.
    Key,
    /// Re-encrypt every kept provider token under the first key of
    /// `vault.keys` (after putting a new key first; then drop the old ones).
    Rekey,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the signing keys: id, algorithm, when each signs and until
    /// when it is published.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Publish a new signing key (algorithm `oidc.signing_alg`) that signs
    /// after `oidc.key_rotation_lead_secs`; the current key signs until
    /// then and stays published until the tokens it signed have expired.
    Rotate {
        /// Sign with the new key at once (the old one leaked): relying
        /// parties refetch the JWKS when they meet its key id.
        #[arg(long)]
        now: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client. A confidential one (the default) gets a secret,
    /// printed once: only its hash is kept.
    Add {
        /// The client id (letters, digits, '-', '.', '_').
        id: String,
        /// No secret: a public client (a browser or native app, PKCE).
        #[arg(long, conflicts_with = "jwks")]
        public: bool,
        #[command(flatten)]
        settings: ClientFlags,
    },
    /// List every client (config and database).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one client (never its secret).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a stored client: each option given replaces that setting
    /// (a repeated option replaces the whole list).
    Update {
        id: String,
        #[command(flatten)]
        settings: ClientFlags,
    },
    /// A new secret for a confidential client, printed once; the old one
    /// stops working at once.
    RotateSecret { id: String },
    /// Delete a stored client and revoke every grant and token it holds.
    Delete { id: String },
}

/// A client's settings on the command line (see `[clients.<id>]`).
#[derive(Debug, Args, Default)]
pub struct ClientFlags {
    /// The name the consent page shows.
    #[arg(long)]
    name: Option<String>,
    /// An exact redirect URI (repeat for several).
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    /// An exact post-logout redirect URI (repeat for several).
    #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
    post_logout_redirect_uris: Vec<String>,
    /// authorization_code, refresh_token or client_credentials (repeat).
    #[arg(long = "grant-type", value_name = "GRANT", value_parser = parse_grant)]
    grant_types: Vec<crate::core::oidc::GrantType>,
    /// A scope it may ask for (repeat; default: openid email profile
    /// offline_access).
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    #[arg(long, value_name = "SECS")]
    access_token_ttl_secs: Option<i64>,
    #[arg(long, value_name = "SECS")]
    id_token_ttl_secs: Option<i64>,
    #[arg(long, value_name = "SECS")]
    refresh_token_ttl_secs: Option<i64>,
    /// A file with the client's public JWK set (private_key_jwt; then no
    /// secret is made).
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// public or pairwise.
    #[arg(long, value_parser = ["public", "pairwise"])]
    subject_type: Option<String>,
    /// Ask the person to consent (someone else's application): true or
    /// false.
    #[arg(long, value_name = "BOOL")]
    third_party: Option<bool>,
    /// opaque or jwt (RFC 9068).
    #[arg(long, value_parser = ["opaque", "jwt"])]
    access_token_format: Option<String>,
    /// Where logout tokens are posted (back-channel logout); "" removes it.
    #[arg(long, value_name = "URI")]
    backchannel_logout_uri: Option<String>,
}

fn parse_grant(s: &str) -> Result<crate::core::oidc::GrantType, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| "authorization_code, refresh_token or client_credentials".to_string())
}

impl ClientFlags {
    /// The settings with every given option applied.
    fn apply(self, s: &mut crate::core::oidc::ClientSettings, jwks: Option<serde_json::Value>) {
        use crate::core::oidc::{AccessTokenFormat, SubjectType};
        if let Some(n) = self.name {
            s.name = Some(n).filter(|n| !n.is_empty());
        }
        for (given, field) in [
            (self.redirect_uris, &mut s.redirect_uris),
            (
                self.post_logout_redirect_uris,
                &mut s.post_logout_redirect_uris,
            ),
            (self.scopes, &mut s.scopes),
        ] {
            if !given.is_empty() {
                *field = given;
            }
        }
        if !self.grant_types.is_empty() {
            s.grant_types = self.grant_types;
        }
        for (given, field) in [
            (self.access_token_ttl_secs, &mut s.access_token_ttl_secs),
            (self.id_token_ttl_secs, &mut s.id_token_ttl_secs),
            (self.refresh_token_ttl_secs, &mut s.refresh_token_ttl_secs),
        ] {
            if let Some(v) = given {
                *field = v;
            }
        }
        if jwks.is_some() {
            s.jwks = jwks;
        }
        match self.subject_type.as_deref() {
            Some("pairwise") => s.subject_type = SubjectType::Pairwise,
            Some(_) => s.subject_type = SubjectType::Public,
            None => {}
        }
        if let Some(t) = self.third_party {
            s.third_party = t;
        }
        match self.access_token_format.as_deref() {
            Some("jwt") => s.access_token_format = AccessTokenFormat::Jwt,
            Some(_) => s.access_token_format = AccessTokenFormat::Opaque,
            None => {}
        }
        if let Some(u) = self.backchannel_logout_uri {
            s.backchannel_logout_uri = Some(u).filter(|u| !u.is_empty());
        }
    }

    /// The `--jwks` file, read and parsed.
    fn jwks(&self) -> anyhow::Result<Option<serde_json::Value>> {
        self.jwks
            .as_ref()
            .map(|f| {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read --jwks {}", f.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("--jwks {} is not JSON", f.display()))
            })
            .transpose()
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets masked).
    Check,
}

#[derive(Debug, Args)]
pub struct Page {
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long, default_value_t = 0)]
    offset: u64,
}

/// Exit statuses: 0 success, 1 failure, 2 bad configuration or usage.
pub const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match config::resolve_path(cli.config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cfg = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, cfg, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, cfg: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let meta = ClientMeta {
        ip: None,
        user_agent: Some(format!("authgate-cli/{}", env!("CARGO_PKG_VERSION"))),
    };
    match command {
        Command::Serve => {
            init_logging(&cfg, true);
            serve::run(cfg).await
        }
        Command::Openapi => {
            println!("{}", crate::http::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            let from = path.map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
            println!("# effective configuration ({from} + AUTHGATE_* environment); secrets masked");
            print!("{}", cfg.to_masked_toml());
            eprintln!("configuration OK");
            Ok(())
        }
        Command::Migrate => {
            init_logging(&cfg, false);
            open_core(&cfg).await?;
            println!("database migrated ({})", cfg.database.url.masked());
            Ok(())
        }
        Command::User(cmd) => {
            init_logging(&cfg, false);
            user_command(&open_core(&cfg).await?, cmd, &meta).await
        }
        Command::Session(cmd) => {
            init_logging(&cfg, false);
            session_command(&open_core(&cfg).await?, cmd, &meta).await
        }
        Command::Keys(cmd) => {
            init_logging(&cfg, false);
            let core = Core::builder(open_store(&cfg).await?, Arc::new(SystemClock))
                .vault(serve::vault(&cfg)?)
                .oidc(crate::http::oidc::policy(&cfg))
                .build();
            keys_command(&core, cmd, &meta).await
        }
        Command::Client(cmd) => {
            init_logging(&cfg, false);
            let core = Core::builder(open_store(&cfg).await?, Arc::new(SystemClock))
                .oidc(crate::http::oidc::policy(&cfg))
                .build();
            client_command(&cfg, &core, *cmd, &meta).await
        }
        Command::Vault(VaultCommand::Key) => {
            println!("{}", crate::core::Vault::new_key()?);
            Ok(())
        }
        Command::Vault(VaultCommand::Rekey) => {
            init_logging(&cfg, false);
            let Some(vault) = serve::vault(&cfg)? else {
                anyhow::bail!("vault.keys is empty: there is no key to re-encrypt with");
            };
            let core = Core::builder(open_store(&cfg).await?, Arc::new(SystemClock))
                .vault(Some(vault))
                .build();
            let r = core.rekey_vault().await?;
            println!(
                "re-encrypted {} token sets and {} signing keys; {} already under the first key; {} that no configured key opens",
                r.rekeyed, r.signing_keys, r.current, r.unreadable
            );
            if r.unreadable > 0 {
                anyhow::bail!(
                    "{} token sets or signing keys could not be opened with any configured key",
                    r.unreadable
                );
            }
            Ok(())
        }
    }
}

/// Logs go to standard error (standard output carries command output and
/// console mail). The server logs at the configured level; other commands
/// only warnings, unless `RUST_LOG` says otherwise.
fn init_logging(cfg: &Config, server: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if server {
        cfg.log.level.as_str()
    } else {
        "warn"
    };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Libraries that log what they send and receive at debug or trace (the
    // SMTP conversation with a code in it, HTTP bodies and headers with
    // tokens) are held at info whatever the level: no secret in any log.
    for quiet in [
        "lettre=info",
        "hyper=info",
        "h2=info",
        "reqwest=info",
        "rustls=info",
    ] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(server && std::io::stderr().is_terminal());
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Open the database and apply migrations.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn store::Store>> {
    let opts = ConnectOptions {
        max_connections: cfg.database.max_connections,
        acquire_timeout: Duration::from_secs(cfg.database.acquire_timeout_secs),
    };
    let shown = cfg.database.url.masked();
    let store = store::connect(cfg.database.url.expose(), &opts)
        .await
        .with_context(|| format!("cannot open database {shown}"))?;
    store
        .migrate()
        .await
        .with_context(|| format!("cannot migrate database {shown}"))?;
    Ok(store)
}

#[derive(Serialize)]
struct KeyView {
    kid: Uuid,
    alg: String,
    created_at: String,
    signs_from: String,
    retired_at: Option<String>,
    published_until: Option<String>,
}

async fn client_command(
    cfg: &Config,
    core: &Core,
    cmd: ClientCommand,
    meta: &ClientMeta,
) -> anyhow::Result<()> {
    use crate::core::oidc::{ClientSettings, ClientView};
    fn print(c: &ClientView) {
        let s = &c.settings;
        let source = match c.source {
            crate::core::oidc::ClientSource::Config => "config file",
            crate::core::oidc::ClientSource::Database => "database",
        };
        println!("client {} ({source})", c.id);
        if let Some(n) = &s.name {
            println!("  name:                 {n}");
        }
        println!("  authentication:       {}", c.auth_method);
        println!("  redirect URIs:        {}", s.redirect_uris.join(" "));
        if !s.post_logout_redirect_uris.is_empty() {
            println!(
                "  post-logout URIs:     {}",
                s.post_logout_redirect_uris.join(" ")
            );
        }
        let grants: Vec<&str> = s.grant_types.iter().map(|g| g.as_str()).collect();
        println!("  grant types:          {}", grants.join(" "));
        println!("  scopes:               {}", s.scopes.join(" "));
        println!(
            "  token lifetimes (s):  access {}, id {}, refresh {}",
            s.access_token_ttl_secs, s.id_token_ttl_secs, s.refresh_token_ttl_secs
        );
        println!(
            "  third party:          {}",
            if s.third_party {
                "yes (asks for consent)"
            } else {
                "no"
            }
        );
        if let Some(u) = &s.backchannel_logout_uri {
            println!("  back-channel logout:  {u}");
        }
    }
    fn shown_once(id: &str, secret: &str) {
        println!("client_id:     {id}");
        println!("client_secret: {secret}");
        eprintln!(
            "The secret is shown this once and kept only as a hash: store it in the application's secret store now."
        );
    }
    match cmd {
        ClientCommand::Add {
            id,
            public,
            settings,
        } => {
            let jwks = settings.jwks()?;
            let confidential = !public && jwks.is_none();
            let mut s = ClientSettings::default();
            settings.apply(&mut s, jwks);
            let (view, secret) = core.register_client(&id, s, confidential, meta).await?;
            match secret {
                Some(secret) => shown_once(&view.id, &secret),
                None => println!("client_id: {} ({})", view.id, view.auth_method),
            }
        }
        ClientCommand::List { json } => {
            let all = core
                .clients(&crate::http::oidc::client_settings(cfg))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no clients");
            } else {
                for c in &all {
                    println!(
                        "{}  {}  {}",
                        c.id,
                        c.auth_method,
                        c.settings.redirect_uris.join(" ")
                    );
                }
            }
        }
        ClientCommand::Show { id, json } => {
            let all = core
                .clients(&crate::http::oidc::client_settings(cfg))
                .await?;
            let c = all
                .into_iter()
                .find(|c| c.id == id)
                .ok_or_else(|| anyhow::anyhow!("no client {id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print(&c);
            }
        }
        ClientCommand::Update { id, settings } => {
            let jwks = settings.jwks()?;
            let view = core
                .update_client(&id, |s| settings.apply(s, jwks), meta)
                .await?;
            print(&view);
        }
        ClientCommand::RotateSecret { id } => {
            let secret = core.rotate_client_secret(&id, meta).await?;
            shown_once(&id, &secret);
        }
        ClientCommand::Delete { id } => {
            core.delete_client(&id, meta).await?;
            println!("client {id} deleted; its grants and tokens are revoked");
        }
    }
    Ok(())
}

async fn keys_command(core: &Core, cmd: KeysCommand, meta: &ClientMeta) -> anyhow::Result<()> {
    use crate::core::clock::rfc3339;
    match cmd {
        KeysCommand::List { json } => {
            let keys: Vec<KeyView> = core
                .signing_keys()
                .await?
                .into_iter()
                .map(|k| KeyView {
                    kid: k.kid,
                    alg: k.alg,
                    created_at: rfc3339(k.created_at),
                    signs_from: rfc3339(k.signs_from),
                    retired_at: k.retired_at.map(rfc3339),
                    published_until: k.published_until.map(rfc3339),
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for k in keys {
                    println!(
                        "{}  {}  signs from {}{}{}",
                        k.kid,
                        k.alg,
                        k.signs_from,
                        k.retired_at
                            .map(|r| format!(" until {r}"))
                            .unwrap_or_default(),
                        k.published_until
                            .map(|p| format!(", published until {p}"))
                            .unwrap_or_default(),
                    );
                }
            }
        }
        KeysCommand::Rotate { now } => {
            let key = core.rotate_signing_key(now, meta).await?;
            println!(
                "new signing key {} ({}), signing from {}",
                key.kid,
                key.alg,
                crate::core::clock::rfc3339(key.signs_from)
            );
        }
    }
    Ok(())
}

/// The core for CLI commands (no mail, no resolver).
async fn open_core(cfg: &Config) -> anyhow::Result<Core> {
    Ok(Core::new(
        open_store(cfg).await?,
        Arc::new(SystemClock),
        cfg.session.policy(),
    ))
}

#[derive(Serialize)]
struct UserView {
    id: Uuid,
    email: Option<String>,
    name: Option<String>,
    locale: Option<String>,
    disabled: bool,
    created_at: String,
    updated_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id,
            email: u.email.as_ref().map(|e| e.to_string()),
            name: u.display_name.clone(),
            locale: u.locale.as_ref().map(|l| l.as_str().to_string()),
            disabled: u.disabled,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

#[derive(Serialize)]
struct SessionView {
    id: Uuid,
    user_id: Uuid,
    kind: String,
    created_at: String,
    last_seen_at: String,
    ends_at: String,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        SessionView {
            id: s.id,
            user_id: s.user_id,
            kind: s.kind.clone(),
            created_at: rfc3339(s.created_at),
            last_seen_at: rfc3339(s.last_seen_at),
            ends_at: rfc3339(s.ends_at()),
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
        }
    }
}

fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn user_key(s: &str) -> anyhow::Result<UserKey> {
    Ok(UserKey::parse(s)?)
}

/// Turn a core NotFound into a message that names what was looked for.
fn named(e: Error, what: &str) -> anyhow::Error {
    match e {
        Error::NotFound => anyhow::anyhow!("no such {what}"),
        other => other.into(),
    }
}

async fn user_command(core: &Core, cmd: UserCommand, meta: &ClientMeta) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            email,
            name,
            locale,
        } => {
            let new = NewUser::parse(&email, name.as_deref(), locale.as_deref())?;
            let user = core.add_user(new, meta).await?;
            println!("created user {} {}", user.id, email.trim());
        }
        UserCommand::List { page, json } => {
            let users = core.list_users(page.offset, page.limit).await?;
            if json {
                let views: Vec<UserView> = users.iter().map(UserView::from).collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print_table(
                    &["ID", "EMAIL", "NAME", "LOCALE", "STATUS", "CREATED"],
                    users
                        .iter()
                        .map(|u| {
                            vec![
                                u.id.to_string(),
                                u.email.as_ref().map(|e| e.to_string()).unwrap_or_default(),
                                u.display_name.clone().unwrap_or_default(),
                                u.locale
                                    .as_ref()
                                    .map(|l| l.as_str().to_string())
                                    .unwrap_or_default(),
                                if u.disabled { "disabled" } else { "active" }.to_string(),
                                rfc3339(u.created_at),
                            ]
                        })
                        .collect(),
                );
            }
        }
        UserCommand::Show { user, json } => {
            let u = core
                .find_user(&user_key(&user)?)
                .await
                .map_err(|e| named(e, "user"))?;
            let identities = core.user_identities(u.id).await?;
            let sessions = core.list_sessions(Some(u.id), 1000).await?;
            if json {
                let v = serde_json::json!({
                    "user": UserView::from(&u),
                    "identities": identities.iter().map(|i| serde_json::json!({
                        "provider": i.provider, "issuer": i.issuer, "subject": i.subject,
                        "email": i.email, "email_verified": i.email_verified,
                        "created_at": rfc3339(i.created_at), "last_used_at": rfc3339(i.last_used_at),
                    })).collect::<Vec<_>>(),
                    "sessions": sessions.iter().map(SessionView::from).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let v = UserView::from(&u);
                println!("id:         {}", v.id);
                println!("email:      {}", v.email.unwrap_or_default());
                println!("name:       {}", v.name.unwrap_or_default());
                println!("locale:     {}", v.locale.unwrap_or_default());
                println!(
                    "status:     {}",
                    if v.disabled { "disabled" } else { "active" }
                );
                println!("created:    {}", v.created_at);
                println!("updated:    {}", v.updated_at);
                println!("identities: {}", identities.len());
                for i in &identities {
                    println!("  - {} {} {}", i.provider, i.issuer, i.subject);
                }
                println!("sessions:   {} live", sessions.len());
            }
        }
        UserCommand::Disable { user } => {
            let u = core
                .set_user_disabled(&user_key(&user)?, true, meta)
                .await
                .map_err(|e| named(e, "user"))?;
            println!("disabled user {} (all sessions ended)", u.id);
        }
        UserCommand::Enable { user } => {
            let u = core
                .set_user_disabled(&user_key(&user)?, false, meta)
                .await
                .map_err(|e| named(e, "user"))?;
            println!("enabled user {}", u.id);
        }
        UserCommand::Delete { user } => {
            let u = core
                .delete_user(&user_key(&user)?, meta)
                .await
                .map_err(|e| named(e, "user"))?;
            println!("deleted user {}", u.id);
        }
        UserCommand::Factors { user, action, json } => {
            let u = core
                .find_user(&user_key(&user)?)
                .await
                .map_err(|e| named(e, "user"))?;
            if let Some(a @ (FactorAction::Require | FactorAction::Default)) = action {
                let required = matches!(a, FactorAction::Require);
                core.set_mfa_required(u.id, required, meta).await?;
                if required {
                    println!("user {} must now use a second factor", u.id);
                } else {
                    println!("user {} follows mfa.required again", u.id);
                }
                return Ok(());
            }
            if let Some(FactorAction::Remove) = action {
                let totp = core.remove_totp(u.id, meta).await?;
                let mut passkeys = 0;
                for p in core.passkeys(u.id).await? {
                    if core.remove_passkey(u.id, p.id, meta).await? {
                        passkeys += 1;
                    }
                }
                if totp {
                    println!(
                        "removed the TOTP factor and recovery codes of user {}",
                        u.id
                    );
                }
                if passkeys > 0 {
                    println!("removed {passkeys} passkey(s) of user {}", u.id);
                }
                if !totp && passkeys == 0 {
                    println!("user {} has no second factor", u.id);
                }
                return Ok(());
            }
            let f = core.second_factors(u.id).await?;
            let required = core.mfa_state(u.id).await?.required;
            let passkeys = core.passkeys(u.id).await?;
            if json {
                let keys: Vec<serde_json::Value> = passkeys
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "id": p.id, "name": p.name, "created_at": p.created_at,
                            "last_used_at": p.last_used_at, "synced": p.backup_eligible,
                        })
                    })
                    .collect();
                let v = serde_json::json!({
                    "user": u.id, "totp": f.totp, "totp_pending": f.totp_pending,
                    "recovery_codes_left": f.recovery_codes_left, "required": required,
                    "passkeys": keys,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let totp = match (f.totp, f.totp_pending) {
                    (true, _) => "on",
                    (false, true) => "enrolment started, not confirmed",
                    (false, false) => "off",
                };
                println!("totp:                {totp}");
                println!("recovery codes left: {}", f.recovery_codes_left);
                println!(
                    "required:            {}",
                    if required {
                        "yes (by support)"
                    } else {
                        "as mfa.required says"
                    }
                );
            }
        }
        UserCommand::Import { file, format } => import::run(core, &file, format, meta).await?,
    }
    Ok(())
}

async fn session_command(
    core: &Core,
    cmd: SessionCommand,
    meta: &ClientMeta,
) -> anyhow::Result<()> {
    match cmd {
        SessionCommand::List { user, limit, json } => {
            let user_id = match user {
                Some(u) => Some(
                    core.find_user(&user_key(&u)?)
                        .await
                        .map_err(|e| named(e, "user"))?
                        .id,
                ),
                None => None,
            };
            let sessions = core.list_sessions(user_id, limit).await?;
            if json {
                let views: Vec<SessionView> = sessions.iter().map(SessionView::from).collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print_table(
                    &["ID", "USER", "KIND", "CREATED", "LAST SEEN", "ENDS", "IP"],
                    sessions
                        .iter()
                        .map(|s| {
                            let v = SessionView::from(s);
                            vec![
                                v.id.to_string(),
                                v.user_id.to_string(),
                                v.kind,
                                v.created_at,
                                v.last_seen_at,
                                v.ends_at,
                                v.ip.unwrap_or_default(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        SessionCommand::Revoke { id, user } => match (id, user) {
            (Some(id), _) => {
                core.revoke_session(id, meta)
                    .await
                    .map_err(|e| named(e, "session"))?;
                println!("revoked session {id}");
            }
            (None, Some(u)) => {
                let user = core
                    .find_user(&user_key(&u)?)
                    .await
                    .map_err(|e| named(e, "user"))?;
                let n = core.revoke_user_sessions(user.id, meta).await?;
                println!("revoked {n} session(s) of user {}", user.id);
            }
            (None, None) => anyhow::bail!("give a session id or --user"),
        },
    }
    Ok(())
}
