//! `-o/--output`: text for people, JSON and YAML for programs and agents.

use serde::Serialize;

/// Output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON, with stable field names.
    Json,
    /// YAML.
    Yaml,
}

/// The `-o` option.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct OutputArgs {
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl OutputArgs {
    /// Prints `value` as JSON or YAML and returns true, or returns false for text output
    /// (which the caller then prints its own way).
    pub fn print_structured<T: Serialize>(&self, value: &T) -> anyhow::Result<bool> {
        match self.format {
            Format::Text => Ok(false),
            Format::Json => {
                println!("{}", serde_json::to_string_pretty(value)?);
                Ok(true)
            }
            Format::Yaml => {
                print!("{}", serde_saphyr::to_string(value)?);
                Ok(true)
            }
        }
    }
}
