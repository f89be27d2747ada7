use std::time::Duration;

use super::tables::default_statuses;
use super::*;

/// A secret that passes `strong_secret`.
const STRONG: &str = "Tst7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga";

fn load(text: &str) -> Result<Loaded, ConfigError> {
    Config::from_ini(text, Some(PathBuf::from("test.conf")), &|_| None)
}

/// Asserts that `text` is refused with a problem naming each of `places`.
fn assert_refused(text: &str, places: &[&str]) {
    let error = match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(error) => error.to_string(),
    };
    for place in places {
        assert!(error.contains(place), "{place:?} not in {error}");
    }
}

/// `codex.conf.example` sets every key, in its section, to its default,
/// and documents every table section.
#[test]
fn the_example_documents_every_key_with_its_default() {
    let example = include_str!("../../codex.conf.example");
    let loaded = Config::from_ini(example, Some(PathBuf::from("codex.conf.example")), &|_| {
        None
    })
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let body = |text: String| text.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        body(loaded.config.render_masked()),
        body(Config::default().render_masked())
    );
    let map = read_ini(example, "example").unwrap();
    for setting in SETTINGS {
        let section = map.get(setting.section);
        assert!(
            section.is_some(),
            "[{}] is not in the example",
            setting.section
        );
        if let Some(key) = setting.key {
            assert!(
                section.unwrap().contains_key(key),
                "{} is not documented",
                setting.name()
            );
        }
    }
}

/// The check above fails when the example and a default disagree.
#[test]
fn a_default_that_disagrees_with_the_example_is_caught() {
    let example = include_str!("../../codex.conf.example").replace("threads = 64", "threads = 32");
    let loaded = Config::from_ini(&example, None, &|_| None).unwrap();
    assert_ne!(
        loaded.config.render_masked(),
        Config::default().render_masked()
    );
}

/// What `check-config` prints reads back as the same configuration, every
/// key in it, and no secret.
#[test]
fn rendering_lists_every_key_masks_secrets_and_reads_back() {
    let env = |name: &str| match name {
        ENV_WEBHOOK_SECRET => {
            Some("Hk1Tq8Lm3Vx7Rb2Nc5Hd9Jf4Pw6Zs0Ga, Hk2Wd4Qp8Yt1Mn6Bv3Cx9Zr5Ls7Kf0Ej".to_string())
        }
        ENV_DATABASE_URL => Some("postgresql://codex:pg-password@db/codex".to_string()),
        ENV_FRESHSERVICE_API_KEY => Some("fs-key".to_string()),
        ENV_SUPEROPS_API_TOKEN => Some("so-token".to_string()),
        _ => None,
    };
    let text = "[server]\nthreads = 8\nmax_connections = 100\ntrusted_proxies = 10.0.0.0/8\n\
                [freshservice]\ndomain = acme.freshservice.com\nworkspace_id = 2\n\
                [freshservice.statuses]\n11 = awaiting_parts, Awaiting Parts\n\
                [superops]\nsubdomain = acme\n[scheduler]\nreconcile_interval = 90m\n";
    let config = Config::from_ini(text, None, &env).unwrap().config;
    let rendered = config.render_masked();
    for secret in [
        "Hk1Tq8Lm3Vx7",
        "Hk2Wd4Qp8Yt1",
        "pg-password",
        "fs-key",
        "so-token",
    ] {
        assert!(!rendered.contains(secret), "{secret} in\n{rendered}");
    }
    for line in [
        "[server]\nbind = 127.0.0.1:5010\nthreads = 8\n",
        "max_connections = 100\n",
        "secret = *** (2 secrets)\n",
        "connection_string = postgresql://codex:***@db/codex\n",
        "api_key = *** (set)\n",
        "workspace_id = 2\n",
        "\n[freshservice.statuses]\n2 = open, Open\n",
        "11 = awaiting_parts, Awaiting Parts\n",
        "reconcile_interval = 90m\n",
    ] {
        assert!(rendered.contains(line), "{line:?} not in\n{rendered}");
    }
    let map = read_ini(&rendered, "rendered").unwrap();
    for setting in SETTINGS.iter().filter(|s| s.key.is_some()) {
        assert!(map[setting.section].contains_key(setting.key.unwrap()));
    }
    // Masked secrets aside, the rendering is a configuration file that
    // gives the same configuration back.
    let again = Config::from_ini(&rendered, None, &env).unwrap().config;
    assert_eq!(again.render_masked(), rendered);
    for setting in SETTINGS {
        assert!((setting.same)(&config, &again), "{}", setting.name());
    }
}

#[test]
fn unknown_names_are_answered_with_the_likely_one() {
    let error = load(
        "[server]\nbindd = 1\nbnid = 2\nread_timout = 5s\nsecret = x\nzzz = 1\ndomian = y\n\
         [webhook]\nenabled = true\n[freshservice.statuses]\n11 = awaiting_parts\n[extra]\nx = 1\n\
         [webhooks]\nenabled = true\nsecert = z\n[hooks]\nrate_limit_per_minute = 5\nlog_payloads = true\n",
    )
    .err()
    .expect("unknown names are refused");
    let warnings = error.to_string();
    for expected in [
        "test.conf: invalid configuration:",
        "[server] bindd is not a key Codex reads; did you mean bind?",
        "[server] bnid is not a key Codex reads; did you mean bind?",
        "[server] read_timout is not a key Codex reads; did you mean read_timeout?",
        "[server] secret is not a key Codex reads; `secret` belongs in [webhooks]",
        "[server] zzz is not a key Codex reads\n",
        "[server] domian is not a key Codex reads; did you mean [freshservice] domain?",
        "[webhook] is not a section Codex reads; did you mean [webhooks]?",
        "[extra] is not a section Codex reads\n",
        "[hooks] is not a section Codex reads; its keys belong in [webhooks]",
        // Every problem at once: the hint comes with the error it explains.
        "[webhooks] secert is not a key Codex reads; did you mean secret?",
        "[webhooks] enabled = true but no secret is set",
    ] {
        assert!(
            format!("{warnings}\n").contains(expected),
            "{expected:?} not in\n{warnings}"
        );
    }
    assert!(!warnings.contains("freshservice.statuses"), "{warnings}");
    assert_eq!(
        did_you_mean("timezone", ["timezone"].into_iter()),
        Some("timezone")
    );
    assert_eq!(
        did_you_mean("colour", ["bind", "threads"].into_iter()),
        None
    );
    assert_eq!(
        did_you_mean("secert", ["secret"].into_iter()),
        Some("secret")
    );
}

#[test]
fn the_environment_is_named_when_its_value_is_wrong() {
    let env = |name: &str| (name == ENV_DATABASE_URL).then(|| "mysql://x/y".to_string());
    let error = Config::from_ini("[server]\nthreads = 0\n", None, &env)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("CODEX_DATABASE_URL: unsupported database scheme 'mysql'"),
        "{error}"
    );
    assert!(
        error.contains("[server] threads: '0' must be a whole number from 1 to 1024"),
        "{error}"
    );
    // An empty variable does not override the file.
    let env = |name: &str| (name == ENV_WEBHOOK_SECRET).then(String::new);
    let loaded = Config::from_ini(&format!("[webhooks]\nsecret = {STRONG}\n"), None, &env).unwrap();
    assert_eq!(loaded.config.webhooks.secrets[0].expose(), STRONG);
}

#[test]
fn table_lookup_by_display_name() {
    let table = default_statuses();
    assert_eq!(table.lookup_name("JOB COMPLETE - BILL"), Some(15));
    assert_eq!(table.lookup_name("waiting on third party"), Some(10));
    assert_eq!(table.lookup_name("nope"), None);
}

#[test]
fn defaults_match_the_documented_values() {
    let config = Config::default();
    assert_eq!(config.server.bind.to_string(), "127.0.0.1:5010");
    assert_eq!(config.server.max_body_bytes, 1_048_576);
    assert!(!config.webhooks.enabled);
    assert_eq!(config.webhooks.rate_limit_per_minute, 600);
    assert_eq!(
        config.scheduler.ticket_sync_interval,
        Duration::from_secs(300)
    );
    assert_eq!(config.database.url.masked(), "sqlite:///codex.db");
}

#[test]
fn every_problem_is_named_with_section_and_key() {
    let error = load("[server]\nthreads = many\n[webhooks]\nenabled = maybe\nallowed_ips = 10.0.0.0/8, nonsense\n")
        .err()
        .expect("invalid values are refused");
    let text = error.to_string();
    assert!(text.contains("test.conf"), "{text}");
    assert!(text.contains("[server] threads"), "{text}");
    assert!(text.contains("[webhooks] enabled"), "{text}");
    assert!(text.contains("'nonsense'"), "{text}");
}

#[test]
fn enabled_without_secret_is_refused() {
    let error = load("[webhooks]\nenabled = true\n").err().expect("refused");
    assert!(error.to_string().contains("no secret is set"), "{error}");
}

#[test]
fn secrets_are_trimmed_split_and_kept_literally() {
    let (old, new) = (
        "Old#1Tq8Lm3Vx7Rb2Nc5Hd9Jf4Pw6Zs0G",
        "New;2Wd4Qp8Yt1Mn6Bv3Cx9Zr5Ls7Kf0E",
    );
    let loaded = load(&format!(
        "[webhooks]\nenabled = true\nsecret =  {old} , {new}  \n"
    ))
    .unwrap();
    let secrets: Vec<_> = loaded
        .config
        .webhooks
        .secrets
        .iter()
        .map(|s| s.expose().to_string())
        .collect();
    assert_eq!(secrets, [old, new]);
    let rendered = loaded.config.render_masked();
    assert!(
        !rendered.contains(old) && !rendered.contains(new),
        "{rendered}"
    );
    assert!(!format!("{:?}", loaded.config).contains(old));
}

#[test]
fn environment_overrides_file() {
    let env = |name: &str| match name {
        ENV_WEBHOOK_SECRET => Some(STRONG.to_string()),
        ENV_DATABASE_URL => Some("sqlite:////tmp/x.db".to_string()),
        _ => None,
    };
    let loaded = Config::from_ini("[webhooks]\nsecret = file\n", None, &env).unwrap();
    assert_eq!(loaded.config.webhooks.secrets[0].expose(), STRONG);
    assert_eq!(loaded.config.database.url.masked(), "sqlite:////tmp/x.db");
}

#[test]
fn weak_secrets_are_refused_with_the_fix() {
    for (secret, why) in [
        ("abc", "is 3 characters long"),
        ("password123", "is 11 characters long"),
        ("YOUR_SECRET_HERE", "is 16 characters long"),
        ("YOUR_SECRET_HERE_YOUR_SECRET_HERE", "placeholder"),
        ("change-me-0123456789-0123456789-0", "placeholder"),
        (
            "abcdefghijklmnopqrstuvwxyzabcdefgh",
            "one kind of character",
        ),
        ("01234567890123456789012345678901", "one kind of character"),
        (
            "ab12ab12ab12ab12ab12ab12ab12ab12ab",
            "repeats 4 different characters",
        ),
        ("Password-Secret-Webhook-2024-0987", "common words"),
        ("test-secret-0123456789abcdef", "is 28 characters long"),
    ] {
        let error = load(&format!("[webhooks]\nsecret = {secret}\n"))
            .err()
            .unwrap_or_else(|| panic!("{secret} accepted"))
            .to_string();
        assert!(error.contains(why), "{secret}: {error}");
        assert!(error.contains("codex gen-secret"), "{secret}: {error}");
        assert!(!error.contains(secret), "the secret is quoted: {error}");
    }
    // One weak secret among several is named by its place.
    let error = load(&format!("[webhooks]\nsecret = {STRONG}, abc\n"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("[webhooks] secret: secret 2 of 2 is 3 characters"),
        "{error}"
    );
    // The environment variable is held to the same rule.
    let env = |name: &str| (name == ENV_WEBHOOK_SECRET).then(|| "password123".to_string());
    let error = Config::from_ini("", None, &env).err().unwrap().to_string();
    assert!(
        error.contains("CODEX_WEBHOOK_SECRET: the secret is 11"),
        "{error}"
    );
    // What `codex gen-secret` prints passes; so does a mixed 32-character one.
    for secret in [
        "3f9c2a71d04be85693fa1c7e20d4b6a88e5f01c3b27d49a6f8e0c5b13a7d2e94",
        STRONG,
    ] {
        assert_eq!(value::strong_secret(secret), Ok(()), "{secret}");
    }
}

#[test]
fn database_urls() {
    match "sqlite:///data/codex.db".parse::<DatabaseUrl>().unwrap() {
        DatabaseUrl::Sqlite(path) => assert_eq!(path, PathBuf::from("data/codex.db")),
        other => panic!("{other:?}"),
    }
    match "sqlite:////var/lib/codex.db"
        .parse::<DatabaseUrl>()
        .unwrap()
    {
        DatabaseUrl::Sqlite(path) => assert_eq!(path, PathBuf::from("/var/lib/codex.db")),
        other => panic!("{other:?}"),
    }
    let pg: DatabaseUrl = "postgresql+psycopg2://codex:s3cret@db:5432/codex"
        .parse()
        .unwrap();
    assert_eq!(pg.masked(), "postgresql://codex:***@db:5432/codex");
    assert!(!format!("{pg:?}").contains("s3cret"));
    assert!("mysql://x".parse::<DatabaseUrl>().is_err());
    assert!("sqlite:///".parse::<DatabaseUrl>().is_err());
}

#[test]
fn masks_query_passwords() {
    assert_eq!(
        mask_url_password("postgresql://u@h/db?password=pw&sslmode=disable"),
        "postgresql://u@h/db?password=***&sslmode=disable"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("300").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("0").is_err());
    assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    assert_eq!(format_duration(Duration::from_secs(90)), "90s");
}

#[test]
fn status_table_overrides() {
    let loaded =
        load("[freshservice.statuses]\n11 = awaiting_parts, Awaiting Parts\n2 = opened\n").unwrap();
    let statuses = &loaded.config.freshservice.statuses;
    assert_eq!(statuses.name(11), Some("awaiting_parts"));
    assert_eq!(statuses.name(2), Some("opened"));
    assert_eq!(statuses.lookup_name("Awaiting Parts"), Some(11));
    let error = load("[freshservice.statuses]\nx = a\n12 = Bad Name\n")
        .err()
        .unwrap();
    let text = error.to_string();
    assert!(text.contains("[freshservice.statuses] x"), "{text}");
    assert!(text.contains("[freshservice.statuses] 12"), "{text}");
}

#[test]
fn freshservice_zone_workspace_and_webhook_fields() {
    let loaded = load(
        "[freshservice]\ntimezone = Asia/Kolkata\nworkspace_id = 3\n\
         [freshservice.webhook_fields]\nticket_id = TicketNumber, Ref\n",
    )
    .unwrap();
    let f = &loaded.config.freshservice;
    assert_eq!(f.timezone.iana_name(), Some("Asia/Kolkata"));
    assert_eq!(f.workspace_id, Some(3));
    let rendered = loaded.config.render_masked();
    assert!(
        rendered.contains("ticket_id = TicketNumber, Ref"),
        "{rendered}"
    );
    assert!(rendered.contains("timezone = Asia/Kolkata"), "{rendered}");
    assert_eq!(Config::default().freshservice.workspace_id, None);
    assert_refused(
        "[freshservice]\ntimezone = Mars/Olympus\n[freshservice.webhook_fields]\ncolour = c\n",
        &[
            "[freshservice] timezone",
            "[freshservice.webhook_fields] colour",
        ],
    );
}

#[test]
fn superops_section() {
    let defaults = Config::default().superops;
    assert_eq!(defaults.api_url, "https://api.superops.ai/msp");
    assert_eq!(defaults.max_requests_per_minute, 400);
    assert!(!defaults.configured());
    assert_eq!(
        defaults.statuses.get("WAITING ON  customer"),
        Some("waiting_customer")
    );
    let env = |name: &str| (name == ENV_SUPEROPS_API_TOKEN).then(|| "tok-from-env".to_string());
    let loaded = Config::from_ini(
        "[superops]\nsubdomain = acme\napi_url = https://euapi.superops.ai/msp/\ntimezone = Europe/Berlin\n\
         [superops.statuses]\nAwaiting Parts = awaiting_parts\nOpen = new\n",
        None,
        &env,
    )
    .unwrap();
    let so = &loaded.config.superops;
    assert!(so.configured());
    assert_eq!(so.api_token.as_ref().unwrap().expose(), "tok-from-env");
    assert_eq!(so.api_url, "https://euapi.superops.ai/msp");
    assert_eq!(so.statuses.get("awaiting parts"), Some("awaiting_parts"));
    assert_eq!(so.statuses.get("Open"), Some("new"));
    assert_eq!(so.statuses.get("Closed"), Some("closed"));
    let rendered = loaded.config.render_masked();
    assert!(
        !rendered.contains("tok-from-env")
            && !format!("{:?}", loaded.config).contains("tok-from-env")
    );
    assert!(
        rendered.contains("awaiting parts = awaiting_parts"),
        "{rendered}"
    );
    assert_refused(
        "[superops]\nsubdomain = acme\nmax_requests_per_minute = 900\n[superops.priorities]\nP1 = Top Priority\n",
        &[
            "api_token is not",
            "[superops] max_requests_per_minute",
            "[superops.priorities] p1",
        ],
    );
}

#[test]
fn networks() {
    let nets = parse_networks("10.0.0.1, 192.168.1.7/24, 2001:db8::/32").unwrap();
    assert_eq!(nets[0].to_string(), "10.0.0.1/32");
    assert_eq!(nets[1].to_string(), "192.168.1.0/24");
    assert!(parse_networks("10.0.0.0/33").is_err());
}

#[test]
fn a_file_that_is_not_ini_is_named() {
    let error = load("[server\nbind = 127.0.0.1:1\n").err().unwrap();
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
    assert!(error.to_string().starts_with("test.conf: "), "{error}");
}

/// The keys a reload must not print, and the variables that override
/// them, come from their types and the declaration.
#[test]
fn secrets_and_their_variables_are_declared() {
    let secrets: Vec<(String, Option<&str>)> = SETTINGS
        .iter()
        .filter(|s| s.secret)
        .map(|s| (s.name(), s.env))
        .collect();
    assert_eq!(
        secrets,
        [
            ("[webhooks] secret".to_string(), Some(ENV_WEBHOOK_SECRET)),
            (
                "[webhooks] signing_secrets".to_string(),
                Some(ENV_WEBHOOK_SIGNING_SECRETS)
            ),
            ("[api] tokens".to_string(), Some(ENV_API_TOKENS)),
            ("[status] token".to_string(), Some(ENV_STATUS_TOKEN)),
            (
                "[freshservice] api_key".to_string(),
                Some(ENV_FRESHSERVICE_API_KEY)
            ),
            (
                "[superops] api_token".to_string(),
                Some(ENV_SUPEROPS_API_TOKEN)
            ),
        ]
    );
    let database = SETTINGS.iter().find(|s| s.section == "database").unwrap();
    assert_eq!(database.env, Some(ENV_DATABASE_URL));
}

/// What `codex gen-secret` makes always passes the check it points to.
#[test]
fn generated_secrets_are_always_strong() {
    for _ in 0..2000 {
        let secret = crate::commands::gen_secret().unwrap();
        assert_eq!(value::strong_secret(&secret), Ok(()), "{secret}");
    }
}

#[test]
fn signature_schemes_and_their_secrets() {
    let loaded = load(
        "[webhooks]\nenabled = true\nsignature = Standard-Webhooks\n\
         signing_secrets = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_VHN0N0txMkxtOVZ4NFJiOE5jM0hkNkpm\n",
    )
    .unwrap();
    let webhooks = &loaded.config.webhooks;
    assert_eq!(webhooks.signature, SignatureScheme::StandardWebhooks);
    assert_eq!(webhooks.signing_secrets.len(), 2);
    // Neither the secrets nor their number leak into Debug or check-config.
    let shown = loaded.config.render_masked();
    assert!(shown.contains("signature = standard-webhooks"), "{shown}");
    assert!(
        shown.contains("signing_secrets = *** (2 secrets)"),
        "{shown}"
    );
    for text in [shown, format!("{:?}", loaded.config)] {
        assert!(!text.contains("MfKQ9r8"), "{text}");
    }
    assert_refused(
        "[webhooks]\nsignature = hmac-sha256\n",
        &["[webhooks] signature = hmac-sha256 but no signing secret is set"],
    );
    assert_refused(
        "[webhooks]\nsignature = standard-webhooks\nsigning_secrets = Tst7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga\n",
        &["[webhooks] signing_secrets: a standard-webhooks secret is whsec_"],
    );
    assert_refused(
        "[webhooks]\nsignature = ed25519\n",
        &["[webhooks] signature"],
    );
    assert_refused("[webhooks]\nenabled = true\n", &["no secret is set"]);
}

#[test]
fn signing_secrets_come_from_their_variable() {
    let env = |name: &str| {
        (name == ENV_WEBHOOK_SIGNING_SECRETS).then(|| {
            "Env7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga, Two7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga".to_string()
        })
    };
    let text = "[webhooks]\nsignature = hmac-sha256\nsigning_secrets = File7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga\n";
    let loaded = Config::from_ini(text, None, &env).unwrap();
    let secrets: Vec<&str> = loaded
        .config
        .webhooks
        .signing_secrets
        .iter()
        .map(Secret::expose)
        .collect();
    assert_eq!(
        secrets,
        [
            "Env7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga",
            "Two7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga"
        ]
    );
}
