//! Turning files and directories into documents: every `.yaml`, `.yml` and
//! `.json` file (or standard input, `-`), each YAML document in it, in a
//! stable order.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{Document, LoadError, ManifestError, Origin};

/// Reads `paths` (files, or directories — their own files, and with
/// `recursive` those of every directory below, as `kubectl apply -R`) and
/// parses every document. A document that does not parse is reported, not
/// fatal, so one typo does not hide the problems in the others.
pub fn load_documents(
    paths: &[impl AsRef<Path>],
    recursive: bool,
) -> Result<(Vec<Document>, Vec<ManifestError>), LoadError> {
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for file in manifest_files(paths, recursive)? {
        let read = if file == Path::new(STDIN) {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(&file)
        };
        let text = read.map_err(|source| LoadError::Read {
            path: file.clone(),
            source,
        })?;
        parse_documents(&file, &text, &mut documents, &mut errors);
    }
    Ok((documents, errors))
}

/// The path that means standard input (e.g. `kubectl kustomize DIR | tenantdb check -f -`).
pub const STDIN: &str = "-";

fn manifest_files(paths: &[impl AsRef<Path>], recursive: bool) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        let path = path.as_ref();
        if path == Path::new(STDIN) {
            files.push(path.to_owned());
        } else if path.is_dir() {
            let mut found = Vec::new();
            let subdirectories = files_in(path, recursive, &mut found)?;
            if found.is_empty() {
                return Err(LoadError::NothingFound {
                    path: path.to_owned(),
                    subdirectories: !recursive && subdirectories,
                });
            }
            found.sort();
            files.extend(found);
        } else {
            std::fs::metadata(path).map_err(|source| LoadError::Read {
                path: path.to_owned(),
                source,
            })?;
            files.push(path.to_owned());
        }
    }
    Ok(files)
}

/// Adds the manifest files of `dir` (and, when `recursive`, of every
/// directory below it) to `found`; says whether `dir` has subdirectories.
fn files_in(dir: &Path, recursive: bool, found: &mut Vec<PathBuf>) -> Result<bool, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut subdirectories = false;
    for path in entries.filter_map(|entry| entry.ok().map(|e| e.path())) {
        if path.is_dir() {
            subdirectories = true;
            if recursive {
                files_in(&path, true, found)?;
            }
        } else if path.is_file() && is_manifest(&path) {
            found.push(path);
        }
    }
    Ok(subdirectories)
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn parse_documents(file: &Path, text: &str, documents: &mut Vec<Document>, errors: &mut Vec<ManifestError>) {
    // JSON is YAML, so one parser serves both.
    for (index, deserializer) in serde_norway::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: file.to_owned(),
            document: index + 1,
        };
        match Value::deserialize(deserializer) {
            Ok(Value::Null) => {} // an empty document, e.g. after a trailing `---`
            Ok(value) if value.is_object() => documents.push(Document { origin, value }),
            Ok(_) => errors.push(ManifestError {
                origin,
                field: "(document)".into(),
                reason: "expected a mapping (a Kubernetes object)".into(),
            }),
            Err(error) => {
                errors.push(ManifestError {
                    origin,
                    field: "(document)".into(),
                    reason: format!("invalid YAML: {error}"),
                });
                // After a syntax error the stream cannot be resynchronised.
                break;
            }
        }
    }
}
