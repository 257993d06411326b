//! `authgate user import`: CSV or JSON lines, validated completely before
//! anything is written, then imported in one transaction.
use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::Context;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use crate::core::{ClientMeta, Core, NewUser};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

/// One row as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    email: String,
    #[serde(default, alias = "display_name")]
    name: Option<String>,
    #[serde(default)]
    locale: Option<String>,
}

/// A problem with one line of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

/// Parse and validate the whole input. Either every row is good, or the
/// list of every bad row (with its line number) is returned.
pub fn parse(input: &str, format: Format) -> Result<Vec<NewUser>, Vec<RowError>> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut accept =
        |line: u64, raw: RawRow, rows: &mut Vec<NewUser>, errors: &mut Vec<RowError>| {
            match NewUser::parse(&raw.email, raw.name.as_deref(), raw.locale.as_deref()) {
                Ok(user) => match seen.get(&user.email.normalized()) {
                    Some(first) => errors.push(RowError {
                        line,
                        message: format!("duplicate of line {first} ({})", user.email),
                    }),
                    None => {
                        seen.insert(user.email.normalized(), line);
                        rows.push(user);
                    }
                },
                Err(e) => errors.push(RowError {
                    line,
                    message: e.to_string(),
                }),
            }
        };
    match format {
        Format::Jsonl => {
            for (i, text) in input.lines().enumerate() {
                let line = i as u64 + 1;
                if text.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<RawRow>(text) {
                    Ok(raw) => accept(line, raw, &mut rows, &mut errors),
                    Err(e) => errors.push(RowError {
                        line,
                        message: format!("not a valid row: {e}"),
                    }),
                }
            }
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_reader(input.as_bytes());
            let headers = match reader.headers() {
                Ok(h) => h.clone(),
                Err(e) => {
                    return Err(vec![RowError {
                        line: 1,
                        message: format!("unreadable header: {e}"),
                    }]);
                }
            };
            let known = ["email", "name", "display_name", "locale"];
            let unknown: Vec<&str> = headers.iter().filter(|c| !known.contains(c)).collect();
            if !unknown.is_empty() || !headers.iter().any(|c| c == "email") {
                return Err(vec![RowError {
                    line: 1,
                    message: format!(
                        "the header must name the columns email[,name][,locale] (unknown: {})",
                        if unknown.is_empty() {
                            "none".to_string()
                        } else {
                            unknown.join(", ")
                        }
                    ),
                }]);
            }
            for record in reader.records() {
                match record {
                    Ok(rec) => {
                        let line = rec.position().map(|p| p.line()).unwrap_or(0);
                        match rec.deserialize::<RawRow>(Some(&headers)) {
                            Ok(raw) => accept(line, raw, &mut rows, &mut errors),
                            Err(e) => errors.push(RowError {
                                line,
                                message: format!("not a valid row: {e}"),
                            }),
                        }
                    }
                    Err(e) => errors.push(RowError {
                        line: e.position().map(|p| p.line()).unwrap_or(0),
                        message: format!("not a valid row: {e}"),
                    }),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

fn detect(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "csv" => Some(Format::Csv),
        "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
        _ => None,
    }
}

pub async fn run(
    core: &Core,
    file: &Path,
    format: Option<Format>,
    meta: &ClientMeta,
) -> anyhow::Result<()> {
    let stdin = file == Path::new("-");
    let format = format.or_else(|| detect(file)).with_context(|| {
        format!(
            "cannot tell the format of {}: pass --format csv or --format jsonl",
            file.display()
        )
    })?;
    let mut input = String::new();
    if stdin {
        std::io::stdin()
            .read_to_string(&mut input)
            .context("cannot read standard input")?;
    } else {
        input = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    let rows = match parse(&input, format) {
        Ok(rows) => rows,
        Err(errors) => {
            for e in &errors {
                eprintln!("line {}: {}", e.line, e.message);
            }
            anyhow::bail!("nothing imported: {} bad row(s)", errors.len());
        }
    };
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(rows.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} users ({per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
    let report = core
        .import_users(&rows, &|n| bar.set_position(n), meta)
        .await
        .context("import failed; nothing was imported")?;
    bar.finish_and_clear();
    println!(
        "imported {} row(s): {} created, {} updated, {} unchanged",
        rows.len(),
        report.created,
        report.updated,
        report.unchanged
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_and_errors_carry_line_numbers() {
        let ok = parse(
            "email,name,locale\na@example.com,Ann,en\nb@example.com,,\n",
            Format::Csv,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].display_name.as_deref(), Some("Ann"));
        assert_eq!(ok[1].display_name, None);
        let errs = parse(
            "email,name\na@example.com,A\nnot-an-address,B\nA@example.com,C\n\"quoted\nname\",x\nc@example.com\n",
            Format::Csv,
        )
        .unwrap_err();
        let lines: Vec<u64> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 7], "{errs:?}");
        assert!(errs[1].message.contains("duplicate of line 2"));
        let errs = parse("mail,name\na@example.com,A\n", Format::Csv).unwrap_err();
        assert_eq!(errs[0].line, 1);
    }

    #[test]
    fn jsonl_rejects_unknown_fields_and_wrong_types() {
        let input = "{\"email\":\"a@example.com\",\"locale\":\"de\"}\n\n{\"email\":\"b@example.com\",\"admin\":true}\n{\"email\":5}\n[]\n";
        let errs = parse(input, Format::Jsonl).unwrap_err();
        assert_eq!(
            errs.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(
            parse("{\"email\":\"a@example.com\"}\n", Format::Jsonl)
                .unwrap()
                .len(),
            1
        );
    }
}
