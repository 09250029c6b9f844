//! `${VAR}` in a config file's values, as docker compose writes it:
//!
//! - `${VAR}`: the variable's value; unset is an error naming it (a config that silently gets
//!   an empty string is how a service ends up listening on the wrong port);
//! - `${VAR:-default}`: the default when unset or empty; `${VAR-default}`: when unset;
//! - `$$`: a literal `$`. Any other `$` is kept as written.
//!
//! Applied to the file's text before it is parsed, outside comments, so every line keeps its
//! number. A value goes in as the YAML around it needs: inside `"…"` with `\` and `"`
//! escaped, inside `'…'` with `'` doubled; in an unquoted value it must not change the YAML's
//! structure (a `: `, ` #`, a line break or a leading indicator would), or it is an error
//! saying to quote it.

use std::fmt;

/// A `${…}` that cannot be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    /// 1-based line of the `$`.
    pub line: usize,
    /// 1-based column of the `$`.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Replaces every `${…}` of `text` outside comments with `lookup`'s value.
///
/// # Errors
/// Every unset variable without a default, unterminated `${`, bad name, and value that cannot
/// go unquoted where it stands.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<InterpolationError>> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        interpolate_line(line, n + 1, lookup, &mut out, &mut errors);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn interpolate_line(
    line: &str,
    number: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<InterpolationError>,
) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut quote = Quote::None;
    // The last character that was not a space (for: does a quote open a scalar here?).
    let mut before = None::<char>;
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match (quote, c) {
            (Quote::None, '#') if before.is_none() || chars[i - 1].1.is_whitespace() => {
                out.push_str(&line[at..]);
                return;
            }
            (Quote::None, '"' | '\'') if opens_scalar(before) => {
                quote = if c == '"' {
                    Quote::Double
                } else {
                    Quote::Single
                };
            }
            (Quote::Double, '\\') => {
                // An escape: keep it and the escaped character.
                out.push(c);
                if let Some(&(_, next)) = chars.get(i + 1) {
                    out.push(next);
                    i += 2;
                    before = Some(next);
                    continue;
                }
            }
            (Quote::Double, '"') => quote = Quote::None,
            (Quote::Single, '\'') => {
                if chars.get(i + 1).map(|x| x.1) == Some('\'') {
                    out.push_str("''");
                    i += 2;
                    continue;
                }
                quote = Quote::None;
            }
            (_, '$') => match chars.get(i + 1).map(|x| x.1) {
                Some('$') => {
                    out.push('$');
                    i += 2;
                    before = Some('$');
                    continue;
                }
                Some('{') => {
                    let column = line[..at].chars().count() + 1;
                    let Some(end) = chars[i + 2..].iter().position(|x| x.1 == '}') else {
                        errors.push(InterpolationError {
                            line: number,
                            column,
                            message: "`${` without its closing `}`".into(),
                        });
                        out.push_str(&line[at..]);
                        return;
                    };
                    let close = i + 2 + end;
                    let inner: String = chars[i + 2..close].iter().map(|x| x.1).collect();
                    match substitute(&inner, lookup).and_then(|value| {
                        place(&value, quote, &inner, before, chars.get(close + 1))
                    }) {
                        Ok(text) => out.push_str(&text),
                        Err(message) => errors.push(InterpolationError {
                            line: number,
                            column,
                            message,
                        }),
                    }
                    before = Some('}');
                    i = close + 1;
                    continue;
                }
                _ => {}
            },
            _ => {}
        }
        out.push(c);
        if !c.is_whitespace() {
            before = Some(c);
        }
        i += 1;
    }
}

/// A quote opens a quoted scalar only where a value starts.
fn opens_scalar(before: Option<char>) -> bool {
    matches!(before, None | Some(':' | '-' | '[' | '{' | ',' | '?'))
}

/// The value of `NAME`, `NAME:-default` or `NAME-default`.
fn substitute(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name_len = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "`${{{inner}}}`: a variable name is letters, digits and `_`, not starting with a digit"
        ));
    }
    let value = lookup(name);
    if let Some(default) = rest.strip_prefix(":-") {
        return Ok(value
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string()));
    }
    if let Some(default) = rest.strip_prefix('-') {
        return Ok(value.unwrap_or_else(|| default.to_string()));
    }
    if !rest.is_empty() {
        return Err(format!(
            "`${{{inner}}}`: expected `}}`, `:-default` or `-default` after `{name}`"
        ));
    }
    value.ok_or_else(|| {
        format!(
            "`${{{name}}}`: the variable {name} is not set (give a default: `${{{name}:-value}}`)"
        )
    })
}

/// `value` written so that it stays one scalar where it stands.
fn place(
    value: &str,
    quote: Quote,
    inner: &str,
    before: Option<char>,
    after: Option<&(usize, char)>,
) -> Result<String, String> {
    match quote {
        Quote::Double => Ok(value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .replace('\t', "\\t")),
        Quote::Single if value.contains('\n') => Err(format!(
            "`${{{inner}}}`: its value has a line break; use double quotes around it"
        )),
        Quote::Single => Ok(value.replace('\'', "''")),
        Quote::None => {
            let starts_value = opens_scalar(before);
            let breaks = value.contains('\n')
                || value.contains(": ")
                || value.ends_with(':') && after.is_none_or(|x| x.1.is_whitespace())
                || value.contains(" #")
                || (starts_value
                    && value.starts_with([
                        '"', '\'', '#', '&', '*', '!', '|', '>', '%', '@', '`', '{', '[', '-', '?',
                        ',',
                    ]));
            // `,[]{}` would split or close a flow collection (`args: [a, ${X}]`).
            if breaks || value.contains([',', '[', ']', '{', '}']) {
                Err(format!(
                    "`${{{inner}}}`: its value would change the YAML around it; put the value in quotes: \"${{{inner}}}\""
                ))
            } else {
                Ok(value.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8080".into()),
            "EMPTY" => Some(String::new()),
            "TRICKY" => Some("a: b # c".into()),
            "QUOTES" => Some("say \"hi\" and 'bye'".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, Vec<InterpolationError>> {
        interpolate(text, &env)
    }

    #[test]
    fn values_defaults_and_escapes() {
        assert_eq!(run("port: ${PORT}\n").unwrap(), "port: 8080\n");
        assert_eq!(run("a: ${NOPE:-x y}\n").unwrap(), "a: x y\n");
        assert_eq!(run("a: ${EMPTY:-d}\n").unwrap(), "a: d\n");
        assert_eq!(run("a: '${EMPTY-d}'\n").unwrap(), "a: ''\n");
        assert_eq!(run("a: ${NOPE-}\n").unwrap(), "a: \n");
        assert_eq!(
            run("price: $$5 and $HOME\n").unwrap(),
            "price: $5 and $HOME\n"
        );
        assert_eq!(run("a: \"$${PORT}\"\n").unwrap(), "a: \"${PORT}\"\n");
        assert_eq!(
            run("url: http://127.0.0.1:${PORT}/x\n").unwrap(),
            "url: http://127.0.0.1:8080/x\n"
        );
    }

    #[test]
    fn values_are_quoted_as_their_place_needs() {
        assert_eq!(
            run("a: \"${QUOTES}\"\n").unwrap(),
            "a: \"say \\\"hi\\\" and 'bye'\"\n"
        );
        assert_eq!(
            run("a: '${QUOTES}'\n").unwrap(),
            "a: 'say \"hi\" and ''bye'''\n"
        );
        let parsed: serde_yaml::Value =
            serde_yaml::from_str(&run("a: \"${TRICKY}\"\nb: '${QUOTES}'\n").unwrap()).unwrap();
        assert_eq!(parsed["a"].as_str(), Some("a: b # c"));
        assert_eq!(parsed["b"].as_str(), Some("say \"hi\" and 'bye'"));
        let e = run("a: ${TRICKY}\n").unwrap_err();
        assert!(e[0].message.contains("put the value in quotes"), "{e:?}");
    }

    #[test]
    fn comments_are_left_alone_and_errors_have_positions() {
        assert_eq!(
            run("a: 1 # uses ${UNSET}\n# ${ALSO}\n").unwrap(),
            "a: 1 # uses ${UNSET}\n# ${ALSO}\n"
        );
        assert_eq!(run("a: x#${PORT}\n").unwrap(), "a: x#8080\n");
        let e = run("x: 1\ny: ${UNSET}\nz: ${2BAD}\nw: ${OPEN\n").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!((e[0].line, e[0].column), (2, 4));
        assert!(
            e[0].message.contains("the variable UNSET is not set"),
            "{e:?}"
        );
        assert!(e[1].message.contains("variable name"), "{e:?}");
        assert!(e[2].message.contains("closing `}`"), "{e:?}");
        // An apostrophe inside a plain value does not open a quote.
        assert_eq!(run("a: don't ${PORT}\n").unwrap(), "a: don't 8080\n");
    }
}
