//! `env_file:` of a process worker: `KEY=VALUE` lines read into its `execution.env` when the
//! config file is loaded (a key that `env:` sets keeps the `env:` value). The format is
//! docker compose's: blank lines and `#` comments are skipped, `export ` before a key is
//! allowed, a value in matching single or double quotes is unquoted (in double quotes `\n`,
//! `\"` and `\\` are escapes), otherwise it is taken as written after the `=`.

use std::path::Path;

use super::{HsuConfig, ValidationIssue};

/// Reads every worker's env files into its environment; the problems, each naming the worker,
/// the file and its line.
pub(super) fn load_all(config: &mut HsuConfig) -> Vec<ValidationIssue> {
    let mut issues = Vec::new();
    for worker in &mut config.workers {
        if worker.env_file.is_empty() {
            continue;
        }
        let Some(exec) = worker.execution.as_mut() else {
            // Validation says that env_file needs a process with `execution:`.
            continue;
        };
        for file in &worker.env_file {
            let mut issue = |message: String| {
                issues.push(ValidationIssue {
                    worker: Some(worker.id.clone()),
                    field: "env_file".into(),
                    message,
                    line: None,
                    column: None,
                    index: None,
                })
            };
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    issue(format!("cannot read `{}`: {e}", file.display()));
                    continue;
                }
            };
            match parse(&text, file) {
                Ok(pairs) => {
                    for (key, value) in pairs {
                        exec.env.entry(key).or_insert(value);
                    }
                }
                Err(errors) => errors.into_iter().for_each(&mut issue),
            }
        }
    }
    issues
}

/// The `KEY=VALUE` pairs of an env file, in order.
fn parse(text: &str, file: &Path) -> Result<Vec<(String, String)>, Vec<String>> {
    let mut pairs = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let at = format!("`{}` line {}", file.display(), n + 1);
        let Some((key, value)) = line.split_once('=') else {
            errors.push(format!("{at}: expected KEY=VALUE, found {raw:?}"));
            continue;
        };
        let key = key.trim_end();
        if key.is_empty()
            || key.starts_with(|c: char| c.is_ascii_digit())
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            errors.push(format!(
                "{at}: `{key}` is not a variable name (letters, digits and `_`)"
            ));
            continue;
        }
        let value = value.trim_start();
        let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            inner
                .replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_string()
        } else {
            value.trim_end().to_string()
        };
        pairs.push((key.to_string(), value));
    }
    if errors.is_empty() {
        Ok(pairs)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_compose_format() {
        let text = "# comment\n\nA=1\nexport B = two words \nC=\"quoted \\\"x\\\"\\nnext\"\nD='single $X'\nE=\n";
        let pairs = parse(text, Path::new("app.env")).unwrap();
        assert_eq!(
            pairs,
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "quoted \"x\"\nnext"),
                ("D", "single $X"),
                ("E", "")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let errors = parse("A=1\nnot a pair\n1X=2\n", Path::new("app.env")).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("`app.env` line 2: expected KEY=VALUE"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("line 3: `1X` is not a variable name"),
            "{errors:?}"
        );
    }
}
