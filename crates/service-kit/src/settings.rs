//! Layered settings: defaults, then an optional TOML file, then environment
//! variables `CHAT_MEMORY__<SECTION>__<KEY>` (for example
//! `CHAT_MEMORY__NATS__URL=nats://10.0.0.5:4222`).

use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};

/// Environment variable prefix of every setting.
pub const ENV_PREFIX: &str = "CHAT_MEMORY";

/// Why settings could not be loaded. Each renders as one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("settings: config file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    #[error("settings: invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl SettingsError {
    /// A setting that parsed but is not acceptable.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Settings a service can check after loading.
pub trait Validate {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the first bad field.
    fn validate(&self) -> Result<(), SettingsError>;
}

/// Loads `T`: its `Default`, overlaid by `file` (if given; it must exist), overlaid
/// by `CHAT_MEMORY__...` environment variables, then validated.
///
/// # Errors
/// A missing file, a value of the wrong type, an unknown enum value, or a failed
/// [`Validate::validate`].
pub fn load<T>(file: Option<&Path>) -> Result<T, SettingsError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    load_from(file, std::env::vars())
}

/// Environment pairs from string slices, as [`load_from`] takes them (for
/// tests and tools that build an environment by hand).
pub fn env_vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// [`load`] with an explicit environment, for tests.
///
/// # Errors
/// As [`load`].
pub fn load_from<T, I>(file: Option<&Path>, env: I) -> Result<T, SettingsError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
    I: IntoIterator<Item = (String, String)>,
{
    let defaults = config::Config::try_from(&T::default())?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(path) = file {
        if !path.exists() {
            return Err(SettingsError::MissingFile(path.to_path_buf()));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let env_map = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env_map)),
    );
    let settings: T = builder.build()?.try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

/// For `#[serde(deserialize_with = ...)]` on a list setting: environment
/// variables are strings, so accept `"a, b"` (comma-separated, blanks dropped)
/// as well as `["a", "b"]`; `CHAT_MEMORY__ALLOWED_HOSTS=svc,localhost` then works.
///
/// # Errors
/// A value that is neither a list of strings nor a string.
pub fn list_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(
        match <ListOrString as serde::Deserialize>::deserialize(deserializer)? {
            ListOrString::List(list) => list,
            ListOrString::String(joined) => joined
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect(),
        },
    )
}

/// Command-line flags every service binary takes.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// TOML settings file, applied over the defaults (environment variables win over it).
    #[arg(long, short = 'c', env = "CHAT_MEMORY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective settings as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Renders settings for `--print-config`.
pub fn render<T: Serialize>(settings: &T) -> String {
    serde_json::to_string_pretty(settings)
        .unwrap_or_else(|e| format!("<unprintable settings: {e}>"))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        nats: Nats,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Nats {
        url: String,
        partitions: u32,
    }
    impl Default for Nats {
        fn default() -> Self {
            Self {
                url: "nats://127.0.0.1:4222".into(),
                partitions: 8,
            }
        }
    }
    impl Validate for Demo {
        fn validate(&self) -> Result<(), SettingsError> {
            if self.nats.partitions == 0 {
                return Err(SettingsError::invalid(
                    "nats.partitions",
                    "must be at least 1",
                ));
            }
            Ok(())
        }
    }

    use super::env_vars as env;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s: Demo = load_from(None, env(&[])).expect("defaults load");
        assert_eq!(s, Demo::default());
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("kit-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("demo.toml");
        std::fs::write(
            &file,
            "[nats]\nurl = \"nats://file:4222\"\npartitions = 4\n",
        )
        .expect("write");
        let s: Demo =
            load_from(Some(&file), env(&[("CHAT_MEMORY__NATS__PARTITIONS", "12")])).expect("load");
        assert_eq!(s.nats.url, "nats://file:4222");
        assert_eq!(s.nats.partitions, 12);
    }

    #[test]
    fn a_wrongly_typed_value_fails_with_one_line_naming_the_key() {
        let err = load_from::<Demo, _>(None, env(&[("CHAT_MEMORY__NATS__PARTITIONS", "many")]))
            .expect_err("must fail");
        let line = err.to_string();
        assert!(line.contains("partitions"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn validation_failure_names_the_field() {
        let err = load_from::<Demo, _>(None, env(&[("CHAT_MEMORY__NATS__PARTITIONS", "0")]))
            .expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "settings: invalid nats.partitions: must be at least 1"
        );
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = load_from::<Demo, _>(Some(Path::new("/nonexistent/x.toml")), env(&[]))
            .expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/x.toml"));
    }
}
