//! Turning files and directories into documents: every `.yaml`, `.yml` and
//! `.json` file, each YAML document in it, in a stable order.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{Document, LoadError, ManifestError, Origin};

/// Reads `paths` (files, or directories searched one level deep) and parses
/// every document. A document that does not parse is reported, not fatal, so
/// one typo does not hide the problems in the others.
pub fn load_documents(paths: &[impl AsRef<Path>]) -> Result<(Vec<Document>, Vec<ManifestError>), LoadError> {
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for file in manifest_files(paths)? {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
            path: file.clone(),
            source,
        })?;
        parse_documents(&file, &text, &mut documents, &mut errors);
    }
    Ok((documents, errors))
}

fn manifest_files(paths: &[impl AsRef<Path>]) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let read_error = |source| LoadError::Read {
            path: path.to_owned(),
            source,
        };
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(read_error)?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_manifest(p))
                .collect();
            if found.is_empty() {
                return Err(LoadError::NothingFound {
                    path: path.to_owned(),
                });
            }
            found.sort();
            files.extend(found);
        } else {
            std::fs::metadata(path).map_err(read_error)?;
            files.push(path.to_owned());
        }
    }
    Ok(files)
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
