//! `reel.toml`: the flags of the commands, read from a file (ADR 46).
//!
//! The file's keys are not declared here: they are the long names of the
//! flags the commands take, found on the `clap` command itself, so a flag
//! added to `reel serve` is a key of the file with nothing else to do. A
//! table groups keys by their first word (`[emit] depth = 8` is
//! `--emit-depth 8`); `[set.NAME]` holds the settings of one module
//! (`--set NAME.KEY=VALUE`). A file value becomes the flag's default, so a
//! flag given on the command line, then its environment variable, win over
//! the file, and the file over the built-in default.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

use super::ProjectionSettings;

/// The file read when neither `--config` nor `REEL_CONFIG` names one.
pub const DEFAULT_FILE: &str = "reel.toml";

/// Flags that are not keys of the file: the file's own, clap's, and `--set`
/// (written as `[set.NAME]` tables).
const NOT_KEYS: &[&str] = &["config", "help", "version", "set"];

/// A configuration file, read and checked against the commands' flags.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Values of flags by long name.
    values: BTreeMap<String, FileValue>,
    /// `NAME.KEY=VALUE` settings of single modules, in file order, and the
    /// line of each.
    settings: Vec<(String, usize)>,
}

#[derive(Debug, Clone)]
struct FileValue {
    values: Vec<String>,
    line: usize,
}

/// The command line parsed over a configuration file.
pub struct Parsed {
    /// The command, its flags' defaults replaced by the file's values.
    pub command: Command,
    /// What clap made of the arguments.
    pub matches: ArgMatches,
    /// The file, if one was read.
    pub file: Option<ConfigFile>,
    /// The flags' ids by subcommand, in declaration order (changing a
    /// default moves a flag to the end of its command's list).
    order: BTreeMap<String, Vec<String>>,
}

/// Parse `args` (program name first) for `command`, the flags of the
/// subcommands named in `subcommands` taking their defaults from the
/// configuration file. Like clap's `get_matches`, exits on `--help` and on a
/// malformed command line; a file that cannot be used is an error naming the
/// file, the line and the key.
pub fn parse(
    mut command: Command,
    args: impl IntoIterator<Item = OsString>,
    subcommands: &[&str],
) -> Result<Parsed, String> {
    let args: Vec<OsString> = args.into_iter().collect();
    let order = command
        .get_subcommands()
        .map(|s| (s.get_name().to_owned(), s.get_arguments().map(|a| a.get_id().to_string()).collect()))
        .collect();
    let file = match locate(&args, std::env::var_os("REEL_CONFIG"))? {
        Some(path) => {
            let file = ConfigFile::read(&path, &command, subcommands)?;
            command = file.apply(command, subcommands);
            Some(file)
        }
        None => None,
    };
    let matches = command.try_get_matches_from_mut(args).unwrap_or_else(|e| e.exit());
    Ok(Parsed { command, matches, file, order })
}

/// The file to read: `--config FILE` in `args`, else `REEL_CONFIG`, else
/// `./reel.toml` if there is one. A file named explicitly must exist.
pub fn locate(args: &[OsString], env: Option<OsString>) -> Result<Option<PathBuf>, String> {
    let mut named = None;
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let Some(word) = word.to_str() else { continue };
        if word == "--" {
            break;
        }
        if word == "--config" {
            named = words.next().map(PathBuf::from);
        } else if let Some(path) = word.strip_prefix("--config=") {
            named = Some(PathBuf::from(path));
        }
    }
    let named = named.or(env.filter(|e| !e.is_empty()).map(PathBuf::from));
    match named {
        Some(path) if !path.is_file() => Err(format!("configuration file {}: no such file", path.display())),
        Some(path) => Ok(Some(path)),
        None => Ok(Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file())),
    }
}

impl ConfigFile {
    /// Read `path` and check every key against the flags of `subcommands`.
    pub fn read(path: &Path, command: &Command, subcommands: &[&str]) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("configuration file {}: {e}", path.display()))?;
        Self::parse(path, &text, command, subcommands)
    }

    /// Check `text` (the contents of `path`) against the flags of `subcommands`.
    pub fn parse(path: &Path, text: &str, command: &Command, subcommands: &[&str]) -> Result<Self, String> {
        let at = |span: std::ops::Range<usize>| format!("{}:{}", path.display(), line_of(text, span.start));
        let table = DeTable::parse(text).map_err(|e| {
            let line = e.span().map_or_else(|| path.display().to_string(), &at);
            format!("{line}: {}", e.message().trim_end())
        })?;
        let flags = flags(command, subcommands);
        let mut file = Self { path: path.to_owned(), values: BTreeMap::new(), settings: Vec::new() };
        let mut pending: Vec<(String, String, &toml::Spanned<DeValue<'_>>, usize)> = Vec::new();
        for (key, value) in table.get_ref() {
            let line = line_of(text, key.span().start);
            if key.get_ref() == "set" {
                file.module_settings(value, text, &at)?;
            } else {
                walk(key.get_ref(), key.get_ref(), value, line, text, &flags, &mut pending)
                    .map_err(|e| format!("{}:{e}", path.display()))?;
            }
        }
        for (long, dotted, value, line) in pending {
            let arg = flags[&long];
            let values = values_for(arg, &dotted, value).map_err(|e| format!("{}:{line}: {e}", path.display()))?;
            for v in &values {
                check(arg, v).map_err(|e| format!("{}:{line}: `{dotted}`: {e}", path.display()))?;
            }
            file.values.insert(long, FileValue { values, line });
        }
        Ok(file)
    }

    /// `[set.NAME]` tables: each key a setting of module NAME (`--set NAME.KEY=VALUE`).
    fn module_settings(
        &mut self,
        value: &toml::Spanned<DeValue<'_>>,
        text: &str,
        at: &dyn Fn(std::ops::Range<usize>) -> String,
    ) -> Result<(), String> {
        let DeValue::Table(modules) = value.get_ref() else {
            return Err(format!(
                "{}: `set` holds one table per module: [set.NAME], as in --set NAME.KEY=VALUE",
                at(value.span())
            ));
        };
        for (name, settings) in modules {
            if !reel_model::is_projection_name(name.get_ref()) {
                return Err(format!(
                    "{}: `{}` cannot name a projection ({})",
                    at(name.span()),
                    name.get_ref(),
                    reel_model::PROJECTION_NAME_RULE
                ));
            }
            let DeValue::Table(settings) = settings.get_ref() else {
                return Err(format!("{}: `set.{}` is a table of settings", at(name.span()), name.get_ref()));
            };
            for (key, value) in settings {
                let dotted = format!("set.{}.{}", name.get_ref(), key.get_ref());
                let value =
                    scalar(value.get_ref()).ok_or_else(|| format!("{}: `{dotted}` takes one value", at(key.span())))?;
                ProjectionSettings::default()
                    .set(key.get_ref(), &value)
                    .map_err(|e| format!("{}: `{dotted}`: {e}", at(key.span())))?;
                self.settings
                    .push((format!("{}.{}={value}", name.get_ref(), key.get_ref()), line_of(text, key.span().start)));
            }
        }
        Ok(())
    }

    /// `command` with the file's values as the defaults of the flags of `subcommands`.
    pub fn apply(&self, mut command: Command, subcommands: &[&str]) -> Command {
        for name in subcommands {
            let Some(sub) = command.find_subcommand(name) else { continue };
            let ids: Vec<(String, String)> = sub
                .get_arguments()
                .filter_map(|a| Some((a.get_id().to_string(), a.get_long()?.to_owned())))
                .filter(|(_, long)| self.values.contains_key(long))
                .collect();
            command = command.mut_subcommand(name, |mut sub| {
                for (id, long) in ids {
                    let values = self.values[&long].values.clone();
                    sub = sub.mut_arg(id, |a| a.default_values(values));
                }
                sub
            });
        }
        command
    }

    /// The `--set` values of the file, to apply before those of the command line.
    pub fn settings(&self) -> Vec<String> {
        self.settings.iter().map(|(s, _)| s.clone()).collect()
    }
}

impl Parsed {
    /// `settings` (a command's `--set` values) after the file's, so that the
    /// command line wins key by key.
    pub fn with_file_settings(&self, settings: Vec<String>) -> Vec<String> {
        let mut all = self.file.as_ref().map(ConfigFile::settings).unwrap_or_default();
        all.extend(settings);
        all
    }

    /// The effective configuration of `subcommand` as a TOML file: each flag's
    /// value and where it came from, secrets hidden.
    pub fn effective(&self, subcommand: &str) -> String {
        let sub = self.command.find_subcommand(subcommand).expect("a subcommand of the command");
        let matches = self.matches.subcommand_matches(subcommand).expect("the subcommand that ran");
        let mut out = match &self.file {
            Some(f) => {
                format!("# reel's configuration: flags, then environment, then {}, then defaults\n", f.path.display())
            }
            None => "# reel's configuration: flags, then environment, then defaults (no reel.toml)\n".to_owned(),
        };
        let mut settings: Vec<(String, String)> = Vec::new();
        let args = self.order[subcommand].iter().filter_map(|id| sub.get_arguments().find(|a| a.get_id() == id));
        for arg in args {
            let Some(long) = arg.get_long() else { continue };
            let id = arg.get_id().as_str();
            if long == "set" {
                let file = self.file.iter().flat_map(|f| &f.settings);
                settings.extend(file.map(|(s, line)| (s.clone(), format!("{}:{line}", self.path_text()))));
                let flags = matches.get_raw(id).into_iter().flatten();
                settings.extend(flags.map(|s| (s.to_string_lossy().into_owned(), "flag".to_owned())));
                continue;
            }
            if NOT_KEYS.contains(&long) {
                continue;
            }
            let Some(raw) = matches.get_raw(id) else {
                out.push_str(&format!("# {long} is not set\n"));
                continue;
            };
            let values: Vec<String> = raw.map(|v| shown(arg, &v.to_string_lossy())).collect();
            let value = if takes_many(arg) { format!("[{}]", values.join(", ")) } else { values.join(" ") };
            let origin = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag".to_owned(),
                Some(ValueSource::EnvVariable) => {
                    format!("environment {}", arg.get_env().map(|e| e.to_string_lossy()).unwrap_or_default())
                }
                _ => match self.file.as_ref().and_then(|f| f.values.get(long)) {
                    Some(v) => format!("{}:{}", self.path_text(), v.line),
                    None => "default".to_owned(),
                },
            };
            out.push_str(&line(&format!("{long} = {value}"), &origin));
        }
        // The last value of a key wins, as when reel applies them.
        let mut modules: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
        for (setting, origin) in settings {
            let Some((target, value)) = setting.split_once('=') else { continue };
            let Some((name, key)) = target.split_once('.') else { continue };
            modules.entry(name.to_owned()).or_default().insert(key.to_owned(), (value.to_owned(), origin));
        }
        for (name, keys) in modules {
            out.push_str(&format!("\n[set.{name}]\n"));
            for (key, (value, origin)) in keys {
                out.push_str(&line(&format!("{key} = {}", toml_value(&value, false)), &origin));
            }
        }
        out
    }

    fn path_text(&self) -> String {
        self.file.as_ref().map(|f| f.path.display().to_string()).unwrap_or_default()
    }
}

/// `text` padded, then `# origin`.
fn line(text: &str, origin: &str) -> String {
    format!("{text:<48} # {origin}\n")
}

/// The flags of `subcommands` by long name (the first declaration of a name wins).
fn flags<'c>(command: &'c Command, subcommands: &[&str]) -> BTreeMap<String, &'c Arg> {
    let mut flags = BTreeMap::new();
    for sub in subcommands.iter().filter_map(|s| command.find_subcommand(s)) {
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long().filter(|l| !NOT_KEYS.contains(l)) {
                flags.entry(long.to_owned()).or_insert(arg);
            }
        }
    }
    flags
}

/// Find the flag of key `long` (`dotted` as written): a table whose name is
/// no flag groups flags by their first words.
fn walk<'t>(
    long: &str,
    dotted: &str,
    value: &'t toml::Spanned<DeValue<'t>>,
    line: usize,
    text: &str,
    flags: &BTreeMap<String, &Arg>,
    pending: &mut Vec<(String, String, &'t toml::Spanned<DeValue<'t>>, usize)>,
) -> Result<(), String> {
    if flags.contains_key(long) {
        pending.push((long.to_owned(), dotted.to_owned(), value, line));
        return Ok(());
    }
    if let DeValue::Table(table) = value.get_ref() {
        for (key, value) in table {
            let line = line_of(text, key.span().start);
            walk(
                &format!("{long}-{}", key.get_ref()),
                &format!("{dotted}.{}", key.get_ref()),
                value,
                line,
                text,
                flags,
                pending,
            )?;
        }
        return Ok(());
    }
    Err(unknown(long, dotted, line, flags))
}

/// The error for key `dotted` (flag `--long`) that no command takes.
fn unknown(long: &str, dotted: &str, line: usize, flags: &BTreeMap<String, &Arg>) -> String {
    let near = flags.keys().min_by_key(|k| strsim::levenshtein(k, long)).filter(|k| strsim::levenshtein(k, long) <= 2);
    let hint = near.map_or_else(String::new, |k| format!(" (did you mean `{k}`?)"));
    format!("{line}: unknown key `{dotted}`: no flag --{long}{hint}; the keys are the long flags of `reel serve`")
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Whether `arg` takes a list.
fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append) || arg.get_num_args().is_some_and(|n| n.max_values() > 1)
}

/// The flag values `value` stands for, for `arg`.
fn values_for(arg: &Arg, dotted: &str, value: &toml::Spanned<DeValue<'_>>) -> Result<Vec<String>, String> {
    let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    match value.get_ref() {
        DeValue::Boolean(b) => Ok(vec![b.to_string()]),
        _ if switch => Err(format!("`{dotted}` is true or false")),
        DeValue::Array(items) if takes_many(arg) => items
            .iter()
            .map(|item| scalar(item.get_ref()).ok_or_else(|| format!("`{dotted}` is a list of values")))
            .collect(),
        DeValue::Array(_) => Err(format!("`{dotted}` takes one value, not a list")),
        other => scalar(other).map(|v| vec![v]).ok_or_else(|| format!("`{dotted}` takes a value, not a table")),
    }
}

/// A number, string, boolean or date as a flag would spell it.
fn scalar(value: &DeValue<'_>) -> Option<String> {
    Some(match value {
        DeValue::String(s) => s.to_string(),
        DeValue::Integer(i) if i.radix() == 10 => i.as_str().replace('_', ""),
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()?.to_string(),
        DeValue::Float(f) => f.as_str().replace('_', ""),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(_) | DeValue::Table(_) => return None,
    })
}

/// Whether `arg`'s parser takes `value`, parsing it as the flag alone would.
fn check(arg: &Arg, value: &str) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return Ok(());
    }
    let long = arg.get_long().unwrap_or_default().to_owned();
    let alone =
        Arg::new("value").long(long.clone()).value_parser(arg.get_value_parser().clone()).allow_hyphen_values(true);
    let probe = Command::new("reel.toml").no_binary_name(true).arg(alone);
    match probe.try_get_matches_from([format!("--{long}"), value.to_owned()]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            Err(first.trim_start_matches("error: ").to_owned())
        }
    }
}

/// `value` of `arg` as TOML, a secret hidden.
fn shown(arg: &Arg, value: &str) -> String {
    let long = arg.get_long().unwrap_or_default();
    let secret = arg.is_hide_env_values_set() || ["token", "password", "secret"].iter().any(|s| long.ends_with(s));
    if secret && !value.is_empty() {
        return "\"***\"".to_owned();
    }
    let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    toml_value(&hide_url_secrets(value), switch)
}

/// `value` as a TOML value: numbers and booleans bare, the rest a string.
fn toml_value(value: &str, switch: bool) -> String {
    let number =
        value.parse::<i64>().is_ok() || (value.parse::<f64>().is_ok_and(f64::is_finite) && value.contains('.'));
    if switch || number || value == "true" || value == "false" {
        return value.to_owned();
    }
    let mut quoted = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `value` with the password of a URL (`scheme://user:PASSWORD@host`) and
/// the values of query parameters naming a secret hidden.
pub fn hide_url_secrets(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else { return value.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _))
                        if ["password", "token", "secret", "pass"]
                            .iter()
                            .any(|s| k.to_ascii_lowercase().contains(s)) =>
                    {
                        format!("{k}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(hide_url_secrets("postgres://reel:hunter2@db:5432/reel"), "postgres://reel:***@db:5432/reel");
        assert_eq!(
            hide_url_secrets("postgres://reel@db/reel?password=x&sslmode=require"),
            "postgres://reel@db/reel?password=***&sslmode=require"
        );
        assert_eq!(hide_url_secrets("127.0.0.1:8080"), "127.0.0.1:8080");
    }
}
