//! Errors name what the user typed: an option that can also come from an
//! environment variable (clap's `env`) is named as the option when it was
//! given on the command line, and as the variable when it came from there.

use backstop_core::config::ConfigError;

/// One option backed by a variable, with the value the command used.
pub struct Typed {
    /// The environment variable, e.g. `BACKSTOP_DATABASE_URL`.
    var: &'static str,
    /// The option, e.g. `--database-url`.
    flag: &'static str,
    /// The value the command used, from either source.
    value: Option<String>,
}

impl Typed {
    /// Option `flag`, backed by variable `var`, which had `value`.
    pub fn new(var: &'static str, flag: &'static str, value: Option<&str>) -> Self {
        Self {
            var,
            flag,
            value: value.map(str::to_string),
        }
    }

    /// Whether the value came from the environment variable (clap takes the
    /// option first, so a value equal to the variable's is the variable's).
    fn came_from_env(&self, env_value: Option<&str>) -> bool {
        self.value.is_none() || env_value == self.value.as_deref()
    }
}

/// `e`, naming each setting the way the user gave it.
pub fn as_typed(mut e: ConfigError, settings: &[Typed]) -> ConfigError {
    for s in settings {
        let env_value = std::env::var(s.var).ok();
        e = if s.came_from_env(env_value.as_deref()) {
            e.renamed(s.flag, s.var)
        } else {
            e.renamed(s.var, s.flag)
        };
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_option_is_named_as_typed() {
        let typed = Typed::new(
            "BACKSTOP_TEST_TYPED_UNSET_VAR",
            "--database-url",
            Some("postgres://h/x y"),
        );
        let e = ConfigError::invalid("BACKSTOP_TEST_TYPED_UNSET_VAR", "x", "bad");
        let msg = as_typed(e, &[typed]).to_string();
        assert!(msg.starts_with("option --database-url"), "{msg}");
        // Not given at all: the variable is what to set.
        let absent = Typed::new("BACKSTOP_TEST_TYPED_UNSET_VAR", "--database-url", None);
        let e = ConfigError::missing("--database-url", "give it");
        let msg = as_typed(e, &[absent]).to_string();
        assert!(
            msg.starts_with("environment variable BACKSTOP_TEST_TYPED_UNSET_VAR"),
            "{msg}"
        );
    }
}
