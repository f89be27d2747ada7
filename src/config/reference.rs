//! `docs/configuration.md`, generated from `SETTINGS` and the doc comments
//! of the structs in `sections.rs`, so the reference cannot drift from
//! what Codex reads.

use std::collections::HashMap;

use super::{Config, OnReload, SETTINGS};

/// The source of the section structs, whose doc comments are the text of
/// the reference.
const SECTIONS_SOURCE: &str = include_str!("sections.rs");

/// The configuration reference as Markdown: every section and key with its
/// default, environment override, whether it is a secret, what a reload
/// (SIGHUP) does with it, and its doc comment.
pub fn reference() -> String {
    let docs = Docs::read(SECTIONS_SOURCE);
    let defaults = Config::default();
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from `SETTINGS` in src/config.rs and the doc comments in\n\
         src/config/sections.rs; regenerate with\n\
         `CODEX_WRITE_DOCS=1 cargo test --lib config::reference`. -->\n\n\
         Codex reads `codex.conf` (see `codex.conf.example`, which sets every key to\n\
         its default). A variable in the *Environment* column, when set and not\n\
         empty, or the systemd credential of that name, overrides the file.\n\
         Secrets are shown masked by `codex check-config`, and a reload only says\n\
         that they changed. *On reload* says what a SIGHUP does with a changed\n\
         value.\n",
    );
    let mut section = "";
    for setting in SETTINGS {
        let (base, table) = match setting.section.split_once('.') {
            Some((base, _)) => (base, true),
            None => (setting.section, false),
        };
        if setting.section != section && (table || base != section) {
            section = setting.section;
            out += &format!("\n## `[{section}]`\n\n");
            let doc = if table {
                docs.field(base, setting.field)
            } else {
                let doc = docs.section(base);
                doc.strip_prefix(&format!("`[{base}]`: ")).unwrap_or(doc)
            };
            let mut letters = doc.chars();
            let first = letters.next().map(|c| c.to_uppercase().to_string());
            out += &format!("{}{}\n\n", first.unwrap_or_default(), letters.as_str());
            if table {
                out += &format!("On reload: {}.\n\n", reload(setting.on_reload));
                let lines = (setting.lines)(&defaults);
                if lines.is_empty() {
                    out += "No default entries.\n";
                    continue;
                }
                out += "Default entries:\n\n```ini\n";
                for (key, value) in lines {
                    out += &format!("{key} = {value}\n");
                }
                out += "```\n";
                continue;
            }
            out += "| Key | Default | Environment | Secret | On reload | Meaning |\n";
            out += "|---|---|---|---|---|---|\n";
        }
        let Some(key) = setting.key else { continue };
        out += &format!(
            "| `{key}` | {} | {} | {} | {} | {} |\n",
            code_or_empty(setting.default),
            setting
                .env
                .map_or("".to_string(), |name| format!("`{name}`")),
            if setting.secret { "yes" } else { "" },
            reload(setting.on_reload),
            docs.field(base, setting.field).replace('|', "\\|"),
        );
    }
    out
}

fn code_or_empty(text: &str) -> String {
    if text.is_empty() {
        "*(empty)*".to_string()
    } else {
        format!("`{text}`")
    }
}

fn reload(on_reload: OnReload) -> &'static str {
    match on_reload {
        OnReload::Now => "in force for the next request",
        OnReload::Poller => "polling restarts with it",
        OnReload::Restart => "kept until Codex restarts",
    }
}

/// The doc comments of `sections.rs`: each section struct's and each of
/// its fields', keyed by the section's name in `Config`.
struct Docs {
    sections: HashMap<String, String>,
    fields: HashMap<(String, String), String>,
}

impl Docs {
    /// Reads the source: `Config`'s fields name each section's struct, and
    /// every `pub struct` and `pub field:` takes the `///` lines above it.
    fn read(source: &str) -> Docs {
        let mut structs: HashMap<String, (String, Vec<(String, String)>)> = HashMap::new();
        let mut names: Vec<(String, String)> = Vec::new();
        let mut doc: Vec<&str> = Vec::new();
        let mut current: Option<String> = None;
        for line in source.lines().map(str::trim) {
            if let Some(text) = line.strip_prefix("///") {
                doc.push(text.trim());
                continue;
            }
            if line.starts_with("#[") {
                continue; // An attribute between the doc comment and its item.
            }
            let text = doc.join(" ");
            doc.clear();
            if let Some(rest) = line.strip_prefix("pub struct ") {
                let name = rest.trim_end_matches(" {").to_string();
                structs.insert(name.clone(), (text, Vec::new()));
                current = Some(name);
            } else if line == "}" {
                current = None;
            } else if let (Some(name), Some(rest)) = (&current, line.strip_prefix("pub ")) {
                let Some((field, ty)) = rest.split_once(':') else {
                    continue;
                };
                let ty = ty.trim().trim_end_matches(',').to_string();
                if name == "Config" {
                    names.push((field.to_string(), ty));
                } else if let Some((_, fields)) = structs.get_mut(name) {
                    fields.push((field.to_string(), text));
                }
            }
        }
        let mut docs = Docs {
            sections: HashMap::new(),
            fields: HashMap::new(),
        };
        for (section, ty) in names {
            let Some((text, fields)) = structs.remove(&ty) else {
                continue;
            };
            docs.sections.insert(section.clone(), text);
            for (field, text) in fields {
                docs.fields.insert((section.clone(), field), text);
            }
        }
        docs
    }

    fn section(&self, section: &str) -> &str {
        self.sections.get(section).map_or("", String::as_str)
    }

    fn field(&self, section: &str, field: &str) -> &str {
        let key = (section.to_string(), field.to_string());
        self.fields.get(&key).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const DOCS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");

    #[test]
    fn the_committed_reference_is_current() {
        let generated = reference();
        if std::env::var_os("CODEX_WRITE_DOCS").is_some_and(|v| v == "1") {
            std::fs::write(DOCS_PATH, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(DOCS_PATH).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/configuration.md is stale: SETTINGS or the doc comments in \
             src/config/sections.rs changed. Regenerate it with \
             `CODEX_WRITE_DOCS=1 cargo test --lib config::reference` and commit it."
        );
    }

    /// Every field of every section struct is set by exactly one entry of
    /// `SETTINGS`, and every field and section has a doc comment.
    #[test]
    fn the_table_covers_every_field_once() {
        let docs = Docs::read(SECTIONS_SOURCE);
        let fields: BTreeSet<(String, String)> = docs.fields.keys().cloned().collect();
        let mut covered = BTreeSet::new();
        for setting in SETTINGS {
            let section = setting.section.split('.').next().unwrap().to_string();
            let entry = (section, setting.field.to_string());
            assert!(
                covered.insert(entry),
                "{} sets a field twice",
                setting.name()
            );
        }
        assert_eq!(covered, fields);
        for ((section, field), text) in &docs.fields {
            assert!(!text.is_empty(), "[{section}] {field} has no doc comment");
        }
        let sections: BTreeSet<&str> = fields.iter().map(|(s, _)| s.as_str()).collect();
        for section in sections {
            assert!(
                !docs.section(section).is_empty(),
                "[{section}] has no doc comment"
            );
        }
    }

    /// The default text of every key, read through the table, gives the
    /// value of `Config::default()`, and a table section's default lines
    /// read back into an empty table give its default.
    #[test]
    fn every_default_text_reads_as_the_struct_default() {
        let defaults = Config::default();
        for setting in SETTINGS {
            let mut config = Config::default();
            match setting.key {
                Some(key) => (setting.set)(&mut config, key, setting.default)
                    .unwrap_or_else(|error| panic!("{}: {error}", setting.name())),
                None => {
                    for (key, value) in (setting.lines)(&defaults) {
                        (setting.set)(&mut config, &key, &value).unwrap();
                    }
                }
            }
            assert!((setting.same)(&config, &defaults), "{}", setting.name());
        }
    }
}
